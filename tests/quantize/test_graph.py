"""Reading quantized graphs: which convolutions miss onnxruntime's fast INT8 kernels (checked against channel counts
chosen by hand), and, in the graph onnxruntime really runs, no dequantize -> quantize round trip and two
conversions per float island."""

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from slimkit.export import onnx_optimized
from slimkit.quantize import quantize_int8
from slimkit.quantize.graph import conversions, dq_q_pairs, int8_kernel_misses, op_counts, runtime_summary


class _Net(nn.Module):
    """Convolutions on both sides of each rule of onnxruntime's fast x86 INT8 kernels."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(4, 8, 3, padding=1)  # 8 output channels: fewer than 16
        self.b = nn.Conv2d(8, 16, 3, padding=1)  # fast
        self.c = nn.Conv2d(16, 20, 1)  # 20: not a multiple of 8
        self.d = nn.Conv2d(20, 24, 1)  # 20 inputs: a multiple of 4, 24 outputs: fast
        self.dw1 = nn.Conv2d(24, 24, 3, padding=1, groups=24)  # depthwise 24: not a multiple of 16
        self.e = nn.Conv2d(24, 32, 1)  # fast
        self.dw2 = nn.Conv2d(32, 32, 3, padding=1, groups=32)  # depthwise 32: fast
        self.g = nn.Conv2d(32, 32, 3, padding=1, groups=2)  # grouped: no fast kernel
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        for m in (self.a, self.b, self.c, self.d, self.dw1, self.e, self.dw2, self.g):
            x = torch.relu(m(x))
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("graph")
    torch.manual_seed(0)
    calib = [torch.randn(8, 4, 12, 12) for _ in range(2)]
    full = quantize_int8(_Net().eval(), calib, tmp / "all.int8.onnx")
    mixed = quantize_int8(full.fp32_path, calib, tmp / "mixed.int8.onnx", exclude=("d",))
    return full, mixed, tmp


def test_kernel_misses_are_the_hand_picked_layers(quantized):
    full, _, _ = quantized
    misses = {m.layer.module: m.reason for m in int8_kernel_misses(onnx.load(str(full.int8_path)))}
    assert set(misses) == {"a", "c", "dw1", "g"}
    assert "8 output channels (fewer than 16)" in misses["a"] and "20 output channels" in misses["c"]
    assert "depthwise over 24 channels" in misses["dw1"] and "grouped" in misses["g"]
    # a layer kept in float is no INT8 convolution, so it misses no INT8 kernel
    c_float = quantize_int8(full.fp32_path, [torch.randn(8, 4, 12, 12)], quantized[2] / "c.onnx", exclude=("c",))
    assert {m.layer.module for m in int8_kernel_misses(onnx.load(str(c_float.int8_path)))} == {"a", "dw1", "g"}


def test_optimized_graph_fuses_every_qdq_pair_and_a_float_island_costs_two_conversions(quantized):
    full, mixed, tmp = quantized
    opt_full = onnx.load(str(onnx_optimized(full.int8_path, tmp / "full.opt.onnx")))
    opt_mixed = onnx.load(str(onnx_optimized(mixed.int8_path, tmp / "mixed.opt.onnx")))
    for g in (opt_full, opt_mixed):
        assert dq_q_pairs(g) == []
        assert op_counts(g).get("QLinearConv", 0) >= 7
    assert op_counts(opt_mixed).get("QLinearConv", 0) == op_counts(opt_full)["QLinearConv"] - 1
    assert conversions(opt_mixed) == conversions(opt_full) + 2
    # the result carries what onnxruntime runs (read once by quantize_int8): the same counts, the float layer too
    assert full.runtime == runtime_summary(opt_full) and mixed.runtime == runtime_summary(opt_mixed)
    assert full.runtime["int8_convs"] == op_counts(opt_full)["QLinearConv"] == full.runtime["convs"] == 8
    assert (mixed.runtime["convs"], mixed.runtime["int8_convs"]) == (8, 7)


def test_dq_q_pairs_finds_a_round_trip():
    """A hand-built graph quantize -> dequantize -> quantize -> dequantize has exactly one round trip."""
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    zero = helper.make_tensor("z", TensorProto.UINT8, [], [128])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q1"], name="q1"),
             helper.make_node("DequantizeLinear", ["q1", "s", "z"], ["d1"], name="d1"),
             helper.make_node("QuantizeLinear", ["d1", "s", "z"], ["q2"], name="q2"),
             helper.make_node("DequantizeLinear", ["q2", "s", "z"], ["y"], name="d2")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [scale, zero])
    model = helper.make_model(graph)
    assert dq_q_pairs(model) == [("d1", "q2")]
    assert conversions(model) == 4
