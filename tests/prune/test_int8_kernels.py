"""Pruning for INT8 (`kernels="int8"`): the pruned model's convolutions are the ones onnxruntime's fast INT8 kernels
take, checked independently on the exported, quantized graph (`int8_kernel_misses`); the budget is still met; the
option round-trips through configs and `slimkit compress --quantize int8` takes it by default."""

from dataclasses import replace

import onnx
import pytest
import torch
from torch import nn

from slimkit.config import from_dict, to_dict
from slimkit.errors import ConfigError
from slimkit.graph import build_dependency_graph
from slimkit.jobs.compress import PRUNE, CompressConfig
from slimkit.profile import count_macs
from slimkit.prune import PruneConfig, prune
from slimkit.prune.allocation import Allocation, ChannelRule, channel_rules
from slimkit.quantize import quantize_int8
from slimkit.quantize.graph import int8_kernel_misses


def _cbr(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


class _Net(nn.Module):
    """ResNet-20's first stage (16 channels at full resolution) and an inverted residual with a depthwise
    convolution; 4 input channels (an image's 1 or 3 are never a multiple of 4: that stem misses whatever pruning
    does)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _cbr(4, 16)
        self.res = nn.Sequential(_cbr(16, 16), nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16))
        self.expand = _cbr(16, 120, 1)
        self.dw = _cbr(120, 120, 3, 2, groups=120)
        self.project = nn.Sequential(nn.Conv2d(120, 40, 1, bias=False), nn.BatchNorm2d(40))
        self.last = _cbr(40, 80)
        self.head = nn.Linear(80, 10)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.res(x))
        x = self.project(self.dw(self.expand(x)))
        return self.head(self.last(x).mean((2, 3)))


def _trained_looking(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.rand(m.num_features, generator=g) + 0.1
    return model.eval()


def _convs(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    return {n: (m.in_channels, m.out_channels, m.groups) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.fixture(scope="module")
def pruned():
    torch.manual_seed(0)
    model, x = _trained_looking(_Net()), torch.randn(1, 4, 16, 16)
    # the control prunes unrounded (round_to=1), so it misses the fast kernels on any CPU; int8 ignores round_to=1
    return model, x, {k: prune(model, x, macs_target=0.5, kernels=k, round_to=1) for k in ("int8", "fp32")}


def test_int8_pruning_hits_the_fast_int8_kernels_in_the_quantized_graph(pruned, tmp_path):
    model, x, out = pruned
    calib = [torch.randn(8, 4, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    misses = {}
    for k, m in out.items():
        res = quantize_int8(m, calib, tmp_path / f"{k}.int8.onnx")
        misses[k] = [(mm.layer.module, mm.reason) for mm in int8_kernel_misses(onnx.load(str(res.int8_path)))]
    assert misses["int8"] == []
    assert misses["fp32"] != []  # without the option the same budget leaves slow-path convolutions (the test bites)
    small = _convs(out["int8"])
    assert small != _convs(model)  # it pruned
    assert small["dw.0"][1] % 16 == 0 and small["stem.0"][1] == 16  # a 16-channel stage stays whole


@pytest.mark.parametrize("kernels", ["int8", "fp32"])
def test_int8_pruning_meets_the_budget(pruned, kernels):
    model, x, out = pruned
    assert count_macs(out[kernels], x) <= 0.5 * count_macs(model, x)


def test_channel_rules_per_group_match_the_kernel_rules_by_hand():
    model, x = _trained_looking(_Net()), torch.randn(1, 4, 16, 16)
    graph = build_dependency_graph(model, (x,))
    rules = channel_rules(graph.groups, model, Allocation(round_to=1, kernels="int8"))
    by_producer = {next(m.module for m in g.members if m.role in ("out", "dw")): rules[g.id] for g in graph.groups}
    assert (by_producer["stem.0"].multiple, by_producer["stem.0"].minimum) == (8, 16)  # dense out: 8s, >= 16
    assert (by_producer["expand.0"].multiple, by_producer["expand.0"].minimum) == (16, 16)  # through a depthwise
    assert (by_producer["res.0.0"].multiple, by_producer["res.0.0"].minimum) == (8, 16)
    assert (by_producer["project.0"].multiple, by_producer["project.0"].minimum) == (8, 16)
    # fp32 kernels: only the rounding asked for
    plain = channel_rules(graph.groups, model, Allocation(round_to=1))
    assert all(r.multiple is None and r.minimum == 0 for r in plain.values())


def test_kernels_round_trip_and_bad_value():
    cfg = PruneConfig(macs_target=0.5, kernels="int8")
    assert from_dict(PruneConfig, to_dict(cfg)) == cfg
    with pytest.raises(ConfigError, match="kernels"):
        PruneConfig(macs_target=0.5, kernels="int4")


def test_compress_prunes_for_int8_by_default_when_it_quantizes():
    assert CompressConfig(quantize="int8").prune_config.kernels == "int8"
    assert CompressConfig().prune_config.kernels in (None, "fp32")
    old = CompressConfig(quantize="int8", prune=replace(PRUNE, kernels="fp32"))
    assert old.prune_config.kernels == "fp32"  # the earlier behaviour stays reachable
    assert from_dict(CompressConfig, to_dict(old)) == old


def test_channel_rule_holds_whole_by_hand():
    assert ChannelRule(8, 16).holds_whole(16) and not ChannelRule(8, 16).holds_whole(24)
    assert ChannelRule(16).holds_whole(16) and not ChannelRule(8).holds_whole(16)
    assert ChannelRule(16).holds_whole(12) is False  # smaller than one block: unrounded
    assert not ChannelRule().holds_whole(16) and ChannelRule(None, 16).holds_whole(16)
    assert not ChannelRule(8, 24).holds_whole(16)  # a minimum above the size is not applied (as keep_counts)


@pytest.mark.parametrize("round_to", [1, 8])
def test_auto_kernels_keep_int8_counts_except_where_they_hold_a_group_whole(round_to):
    """kernels="auto": the groups int8's counts hold whole (16 channels out of a dense conv: the fast kernel's
    minimum) keep fp32's counts when those let them shrink; every other group keeps int8's rule."""
    model, x = _trained_looking(_Net()), torch.randn(1, 4, 16, 16)
    graph = build_dependency_graph(model, (x,))
    rules = {k: channel_rules(graph.groups, model, Allocation(round_to=round_to, kernels=k))
             for k in ("fp32", "int8", "auto")}
    exempt = set()
    for g in graph.groups:
        held = rules["int8"][g.id].holds_whole(g.size) and not rules["fp32"][g.id].holds_whole(g.size)
        assert rules["auto"][g.id] == rules["fp32" if held else "int8"][g.id]
        exempt |= {m.module for m in g.members if m.role == "out"} if held else set()
    assert {"stem.0", "res.0.0"} <= exempt and not exempt & {"expand.0", "project.0", "last.0"}
    # at round_to 16 (an AVX-512 CPU's block) fp32 holds a 16-channel group whole too: auto is int8
    at16 = [channel_rules(graph.groups, model, Allocation(round_to=16, kernels=k)) for k in ("int8", "auto")]
    assert at16[0] == at16[1]


def test_auto_kernels_shrink_the_16_channel_stage_and_keep_fast_kernels_elsewhere(tmp_path):
    torch.manual_seed(0)
    model, x = _trained_looking(_Net()), torch.randn(1, 4, 16, 16)
    # the same share of every group (uniform), in blocks of 8: int8's counts would hold the stem's group at 16
    small = prune(model, x, macs_target=0.5, kernels="auto", round_to=8, allocation="uniform")
    held = prune(model, x, macs_target=0.5, kernels="int8", round_to=8, allocation="uniform")
    convs = _convs(small)
    assert convs["stem.0"][1] == 8 and _convs(held)["stem.0"][1] == 16
    assert convs["dw.0"][1] % 16 == 0 and convs["project.0"][1] % 8 == 0 and convs["project.0"][1] >= 16
    assert count_macs(small, x) <= 0.5 * count_macs(model, x)
    calib = [torch.randn(8, 4, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    res = quantize_int8(small, calib, tmp_path / "auto.int8.onnx")
    slow = {m.layer.module for m in int8_kernel_misses(onnx.load(str(res.int8_path)))}
    assert slow and slow <= {"stem.0", "res.0.0", "res.1", "expand.0"}  # only the convs of the shrunk 16-groups
    assert PruneConfig(macs_target=0.5, kernels="auto").spread.kernels == "auto"
