"""fp32 graph rewrites before INT8: each gives the same outputs as the graph it rewrites (onnxruntime), touches only
what it should, never changes its input; after quantization the pool runs in INT8 and the grey stem takes the fast
INT8 kernel."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from slimkit.errors import ConfigError
from slimkit.export import onnx_optimized
from slimkit.quantize import Int8Config, int8_layers, quantize_int8, weighted_layers
from slimkit.quantize.graph import int8_kernel_misses, op_counts
from slimkit.quantize.rewrite import apply_rewrites, global_pool, input_pads, pad_channels


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _pool_model(axes, keepdims, axes_as, rank=4, out_shape=None):
    """x (N, 3, 5, 6 [, ...]) -> Conv 3x3 (4 channels) -> Relu -> ReduceMean(axes, keepdims) -> y."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, *[3] * (rank - 2))).astype(np.float32), "w")
    inits = [w]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], "conv", pads=[1] * 2 * (rank - 2)),
             helper.make_node("Relu", ["c"], ["r"], "relu")]
    if axes_as == "input":  # opset 18: axes are a constant second input
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        nodes.append(helper.make_node("ReduceMean", ["r", "axes"], ["y"], "mean", keepdims=keepdims))
    elif axes_as == "constant":  # opset 18, axes from a Constant node
        nodes.append(helper.make_node("Constant", [], ["axes"], "axes_const",
                                      value=numpy_helper.from_array(np.array(axes, np.int64))))
        nodes.append(helper.make_node("ReduceMean", ["r", "axes"], ["y"], "mean", keepdims=keepdims))
    else:
        nodes.append(helper.make_node("ReduceMean", ["r"], ["y"], "mean", axes=list(axes), keepdims=keepdims))
    shape = ["N", 3, 5, 6, 7][:rank]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17 if axes_as == "attribute" else 18)])


@pytest.mark.parametrize("axes_as", ["attribute", "input", "constant"])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("axes", [(2, 3), (-1, -2)])
def test_global_pool_gives_the_same_outputs(axes, keepdims, axes_as):
    model = _pool_model(axes, keepdims, axes_as, out_shape=["N", 4, 1, 1] if keepdims else ["N", 4])
    before = model.SerializeToString()
    new, count = global_pool(model)
    assert model.SerializeToString() == before  # the input is not changed
    assert count == 1
    ops = op_counts(new)
    assert "ReduceMean" not in ops and ops["GlobalAveragePool"] == 1 and ops.get("Flatten", 0) == 1 - keepdims
    assert "Constant" not in ops and [t.name for t in new.graph.initializer] == ["w"]  # the axes are gone
    onnx.checker.check_model(new, full_check=True)
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 6)).astype(np.float32)
    want, got = _run(model, x), _run(new, x)
    assert got.shape == want.shape == ((2, 4, 1, 1) if keepdims else (2, 4))
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("axes,rank", [((1,), 4), ((2,), 4), ((1, 2, 3), 4), ((2, 3, 4), 5), ((2, 3), 5)])
@pytest.mark.parametrize("axes_as", ["attribute", "input"])
def test_a_mean_over_other_axes_is_left_alone(axes, rank, axes_as):
    model = _pool_model(axes, 0, axes_as, rank=rank)
    new, count = global_pool(model)
    assert count == 0 and new.SerializeToString() == model.SerializeToString()


def _stem_model(in_ch, group=1, from_input=True):
    """x (N, in_ch, 6, 6) [-> Relu] -> Conv 3x3 to 8 channels (group `group`) -> y."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, in_ch // group, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b")
    nodes = [] if from_input else [helper.make_node("Relu", ["x"], ["r"], "relu")]
    nodes.append(helper.make_node("Conv", ["x" if from_input else "r", "w", "b"], ["y"], "/stem/Conv", pads=[1] * 4,
                                  group=group))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", in_ch, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 6, 6])], [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("in_ch,padded", [(1, 4), (3, 4), (6, 8)])
def test_pad_channels_gives_the_same_outputs(in_ch, padded):
    model = _stem_model(in_ch)
    before = model.SerializeToString()
    new, count = pad_channels(model)
    assert model.SerializeToString() == before and count == 1
    conv = next(n for n in new.graph.node if n.op_type == "Conv")
    w = next(t for t in new.graph.initializer if t.name == conv.input[1])
    assert conv.name == "/stem/Conv" and list(w.dims) == [8, padded, 3, 3]
    assert [layer.module for layer in weighted_layers(new)] == ["stem"]  # the layer keeps its name
    assert input_pads(new) == {n.name for n in new.graph.node if n.op_type == "Pad"} and len(input_pads(new)) == 1
    assert {t.name for t in new.graph.initializer} == {"b", conv.input[1], new.graph.node[0].input[1]}
    onnx.checker.check_model(new, full_check=True)
    x = np.random.default_rng(1).standard_normal((2, in_ch, 6, 6)).astype(np.float32)
    assert np.abs(_run(new, x) - _run(model, x)).max() <= 1e-5


@pytest.mark.parametrize("kind", ["multiple_of_4", "grouped", "not_the_input"])
def test_pad_channels_leaves_other_convolutions_alone(kind):
    model = {"multiple_of_4": _stem_model(4), "grouped": _stem_model(2, group=2),
             "not_the_input": _stem_model(3, from_input=False)}[kind]
    new, count = pad_channels(model)
    assert count == 0 and new.SerializeToString() == model.SerializeToString()


def test_unknown_rewrite_is_a_config_error():
    with pytest.raises(ConfigError, match=r"'fuse_bn'.*\['global_pool', 'pad_channels'\]"):
        Int8Config(rewrites=("global_pool", "fuse_bn")).check()
    with pytest.raises(ConfigError, match="fuse_bn"):
        apply_rewrites(_stem_model(1), ["fuse_bn"])
    Int8Config(rewrites=()).check()


class _Grey(nn.Module):
    """A grey-image net: 1-channel stem (fast INT8 kernel wants multiples of 4), global mean, linear head."""

    def __init__(self, keepdim: bool) -> None:
        super().__init__()
        self.keepdim = keepdim
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.body = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.body(torch.relu(self.stem(x))))
        return self.head(x.mean((2, 3), keepdim=self.keepdim).flatten(1))


_POOLS = ("ReduceMean", "GlobalAveragePool", "QLinearGlobalAveragePool", "Flatten")


def _quantized_outputs(graph, op):
    """The outputs of the `op` nodes of `graph` that go straight to a QuantizeLinear (the op is in a QDQ group)."""
    outs = {o for n in graph.node if n.op_type == op for o in n.output}
    return [n.input[0] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] in outs]


def _dequantized_inputs(graph, op):
    """The inputs of the `op` nodes of `graph` that come straight from a DequantizeLinear."""
    producers = {o: n for n in graph.node for o in n.output}
    return [i for n in graph.node if n.op_type == op for i in n.input
            if i in producers and producers[i].op_type == "DequantizeLinear"]


@pytest.mark.parametrize("keepdim", [False, True])
def test_int8_pool_runs_in_int8_and_the_grey_stem_takes_the_fast_kernel(tmp_path, keepdim):
    torch.manual_seed(0)
    model = _Grey(keepdim).eval()
    calib = [torch.randn(8, 1, 12, 12) for _ in range(2)]
    plain = quantize_int8(model, calib, tmp_path / "plain.int8.onnx", rewrites=())
    res = quantize_int8(plain.fp32_path, calib, tmp_path / "rw.int8.onnx")
    assert plain.settings["rewritten"] == {} and res.settings["rewritten"] == {"global_pool": 1, "pad_channels": 1}
    assert res.settings["rewrites"] == ("global_pool", "pad_channels")
    before, after = onnx.load(str(plain.int8_path)), onnx.load(str(res.int8_path))
    opt_before = onnx.load(str(onnx_optimized(plain.int8_path, tmp_path / "plain.opt.onnx")))
    opt_after = onnx.load(str(onnx_optimized(res.int8_path, tmp_path / "rw.opt.onnx")))
    # without the rewrites onnxruntime dequantizes to float at the pool and the stem is a slow INT8 conv
    assert _dequantized_inputs(opt_before.graph, "ReduceMean")
    assert [m.layer.module for m in int8_kernel_misses(before)] == ["stem"]
    # with them: the pool is quantized (QDQ file) and runs as an integer kernel, fed by no DequantizeLinear
    assert "ReduceMean" not in op_counts(after) and _quantized_outputs(after.graph, "GlobalAveragePool")
    assert "ReduceMean" not in op_counts(opt_after) and op_counts(opt_after).get("QLinearGlobalAveragePool") == 1
    assert not [op for op in _POOLS if _dequantized_inputs(opt_after.graph, op)]
    assert int8_kernel_misses(after) == []
    assert res.runtime["conversions"] == plain.runtime["conversions"] - 2 == 2  # input Q, output DQ
    assert set(res.int8_layers) == int8_layers(after) == {"/stem/Conv", "/body/Conv", "/head/Gemm"}
    x = calib[0].numpy()
    with torch.no_grad():
        ref = model(calib[0]).numpy()
    for path in (plain.int8_path, res.int8_path):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert np.abs(sess.run(None, {sess.get_inputs()[0].name: x})[0] - ref).max() < 0.1 * np.abs(ref).max()


def test_layers_kept_in_float_by_module_name_still_resolve_after_the_rewrites(tmp_path):
    torch.manual_seed(0)
    calib = [torch.randn(8, 1, 12, 12) for _ in range(2)]
    res = quantize_int8(_Grey(False).eval(), calib, tmp_path / "f.int8.onnx", exclude=("stem",))
    assert res.settings["rewritten"] == {"global_pool": 1, "pad_channels": 1}
    assert [(f.module, f.reason) for f in res.float_layers] == [("stem", "requested")]
    assert "/stem/Conv" not in int8_layers(onnx.load(str(res.int8_path)))
    with pytest.raises(ConfigError, match="no weighted layer 'stem.0'"):
        quantize_int8(res.fp32_path, calib, tmp_path / "g.int8.onnx", exclude=("stem.0",))
