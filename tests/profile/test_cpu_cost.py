from dataclasses import replace

import pytest
import torch
from torch import nn

from slimkit.profile.cpu_cost import (
    CpuRates,
    Int8Rates,
    LayerShape,
    cost_breakdown,
    cpu_rates,
    elementwise_ns,
    layer_macs,
    layer_ns,
    trace_layers,
)

RATES = CpuRates(block=8, dense_macs_per_ns=10.0, depthwise_macs_per_ns=2.0, stem_macs_per_ns=5.0,
                 linear_macs_per_ns=20.0, bytes_per_ns=4.0, op_ns=100.0, elementwise_ns={"silu": 0.5})


def test_dense_conv_by_hand():
    s = LayerShape("conv", 16, 32, 1, 9, pixels=100, pixels_in=100)
    macs = 100 * 32 * 16 * 9  # 460,800: compute 46,080 ns
    traffic = 4 * (100 * 16 + 100 * 32 + 32 * 16 * 9)  # 37,632 bytes: 9,408 ns
    assert layer_macs(s) == macs and traffic / 4.0 < macs / 10.0  # compute-bound
    assert layer_ns(s, RATES) == pytest.approx(macs / 10.0 + 100.0)
    assert layer_ns(s, RATES, batch=4) == pytest.approx(4 * macs / 10.0 + 100.0)


def test_int8_costs_by_hand_fast_kernel_and_generic_path():
    """INT8: a byte per value; the arithmetic at Int8Rates times fp32's, the generic path's rate for a convolution
    onnxruntime's fast INT8 kernel does not take (8 output channels: fewer than 16; depthwise 24: not a multiple of
    16)."""
    q = Int8Rates(dense=2.0, depthwise=1.5, generic=0.5, generic_depthwise=0.25)
    rates = CpuRates(block=8, dense_macs_per_ns=10.0, depthwise_macs_per_ns=2.0, bytes_per_ns=4.0, op_ns=100.0,
                     int8=q)
    hit, miss = LayerShape("conv", 16, 16, 1, 9, 100, 100), LayerShape("conv", 16, 8, 1, 9, 100, 100)
    assert layer_ns(hit, rates) == pytest.approx(100 * 16 * 16 * 9 / 20.0 + 100.0)
    assert layer_ns(miss, rates) == pytest.approx(100 * 8 * 16 * 9 / 5.0 + 100.0)
    assert layer_ns(miss, rates) > layer_ns(hit, rates)  # half the MACs, more time: why pruning keeps 16
    dw_hit, dw_miss = LayerShape("conv", 32, 32, 32, 9, 100, 100), LayerShape("conv", 24, 24, 24, 9, 100, 100)
    assert layer_ns(dw_hit, rates) == pytest.approx(100 * 32 * 9 / 3.0 + 100.0)
    assert layer_ns(dw_miss, rates) == pytest.approx(100 * 24 * 9 / 0.5 + 100.0)
    slow_memory = replace(rates, bytes_per_ns=1.0)
    mem = LayerShape("conv", 16, 16, 1, 1, 1000, 1000)  # memory-bound: a byte per value (fp32: four)
    assert layer_ns(mem, slow_memory) == pytest.approx(1000 * 16 + 1000 * 16 + 16 * 16 + 100.0)
    assert layer_ns(mem, replace(slow_memory, int8=None)) == pytest.approx(4 * (1000 * 32 + 256) + 100.0)
    assert cpu_rates(kernels="int8").int8 == Int8Rates() and cpu_rates().int8 is None


def test_memory_bound_depthwise_by_hand():
    s = LayerShape("conv", 16, 16, 16, 9, pixels=1000, pixels_in=4000)  # stride 2
    assert s.depthwise
    macs = 1000 * 16 * 9  # 144,000: 72,000 ns at 2 MACs/ns
    traffic = 4 * (4000 * 16 + 1000 * 16 + 16 * 9)  # 320,576 bytes: 80,144 ns -> memory-bound
    assert macs / 2.0 < traffic / 4.0
    assert layer_ns(s, RATES) == pytest.approx(traffic / 4.0 + 100.0)


def test_channels_count_in_whole_blocks():
    full = layer_ns(LayerShape("conv", 16, 16, 1, 9, 100, 100), RATES)
    assert layer_ns(LayerShape("conv", 16, 9, 1, 9, 100, 100), RATES) == pytest.approx(full)  # 9 runs as 16
    assert layer_ns(LayerShape("conv", 16, 8, 1, 9, 100, 100), RATES) < full
    # an image's 3 channels are read as they are (not padded to a block), at the stem rate
    stem = LayerShape("conv", 3, 8, 1, 9, 100, 400)
    assert layer_ns(stem, RATES) == pytest.approx(max(100 * 8 * 3 * 9 / 5.0, 4 * (400 * 3 + 800 + 216) / 4.0) + 100)


def test_elementwise_and_fused_activations():
    assert elementwise_ns("silu", 1000, RATES) == pytest.approx(0.5 * 1000 + 100.0)
    assert elementwise_ns("relu", 1000, RATES) == 0.0  # fuses into the convolution


def test_arithmetic_rates_scale_with_the_vector_block():
    avx2, avx512 = cpu_rates("AVX2"), cpu_rates("AVX512")
    assert (avx2.block, avx512.block) == (8, 16)
    assert avx512.dense_macs_per_ns == pytest.approx(2 * avx2.dense_macs_per_ns)
    assert avx512.bytes_per_ns == avx2.bytes_per_ns


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.SiLU()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.norm = nn.GroupNorm(1, 8)
        self.gelu = nn.GELU()
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = self.gelu(self.norm(self.dw(self.act(self.bn(self.conv(x))))))
        return self.fc(x.mean((2, 3)))


def test_trace_layers_records_shapes_and_what_activations_read():
    layers = {t.name: t for t in trace_layers(_Block(), (torch.randn(1, 3, 16, 16),))}
    assert list(layers) == ["conv", "bn", "act", "dw", "norm", "gelu", "fc"]
    assert layers["conv"].shape == LayerShape("conv", 3, 8, 1, 9, pixels=64, pixels_in=256)
    assert layers["dw"].shape.depthwise and layers["fc"].shape == LayerShape("linear", 8, 4, 1, 1, 1, 1)
    assert layers["act"].source == "bn" and layers["act"].elements == 8 * 64  # reads the BN after the conv
    assert layers["gelu"].source == "norm" and layers["norm"].kind == "groupnorm"
    assert layers["bn"].kind == "norm"  # folded into the convolution: no cost of its own


def test_cost_breakdown_by_hand():
    model = nn.Sequential(nn.Conv2d(8, 12, 3, padding=1), nn.SiLU())  # 12 output channels: 1.5 blocks of 8
    b = cost_breakdown(model, (torch.randn(1, 8, 10, 10),), RATES)
    padded = 100 * 16 * 8 * 9 / 10.0  # 16 channels computed: 11,520 ns (memory: 4 * 3,552 bytes, 3,552 ns)
    assert (b["layers"], b["partial_blocks"], b["memory"]) == (1, 1, 0.0)
    assert b["compute"] == pytest.approx(padded) and b["padding"] == pytest.approx(padded * 4 / 16)
    assert b["elementwise"] == pytest.approx(0.5 * 1200) and b["overhead"] == pytest.approx(200.0)
