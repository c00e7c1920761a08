"""Grouped convolutions (1 < groups < channels), depthwise convs with a channel multiplier and channel shuffles:
pruned consistently in every group, equal to the masked reference and to a dense model rebuilt from kept slices."""

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from slimkit.graph import build_dependency_graph
from slimkit.layers.micro import ChannelShuffle
from slimkit.prune import PruneConfig, Pruner, prune

from .reference import assert_prune_matches_reference


def cbr(i, o, **kw):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(o), nn.ReLU())


def _randomise_bn(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


class Grouped(nn.Module):
    """stem -> grouped conv (4 groups, 8 -> 12) -> plain conv -> linear."""

    def __init__(self):
        super().__init__()
        self.stem, self.g, self.c = cbr(3, 8), cbr(8, 12, groups=4), cbr(12, 6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.c(self.g(self.stem(x))).mean((2, 3)))


class ConcatIntoGroups(nn.Module):
    """Two producers concatenated, one per group of the consumer."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.g = cbr(3, 4), cbr(3, 4), cbr(8, 6, groups=2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.g(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))


class Straddling(nn.Module):
    """cat of 2 + 6 channels into 2 groups of 4: the second segment straddles a group boundary."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.g = cbr(3, 2), cbr(3, 6), cbr(8, 6, groups=2)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        return self.fc(self.g(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))


class Multiplier(nn.Module):
    """Depthwise conv with channel multiplier 2 (8 -> 16, groups 8), then a grouped 1x1 and a residual."""

    def __init__(self):
        super().__init__()
        self.stem, self.dw, self.pw = cbr(3, 8), cbr(8, 16, groups=8), cbr(16, 8, groups=2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        s = self.stem(x)
        return self.fc((s + self.pw(self.dw(s))).mean((2, 3)))


class Shuffled(nn.Module):
    """ShuffleNet-style: grouped 1x1, channel shuffle, grouped 1x1 (the shuffle couples the groups)."""

    def __init__(self, g1=2, g2=2):
        super().__init__()
        self.stem = cbr(3, 8)
        self.g1 = nn.Sequential(nn.Conv2d(8, 12, 1, groups=g1, bias=False), nn.BatchNorm2d(12), ChannelShuffle(g1))
        self.g2 = cbr(12, 8, groups=g2)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.g2(torch.relu(self.g1(self.stem(x)))).mean((2, 3)))


@pytest.mark.parametrize("cls", [Grouped, ConcatIntoGroups, Straddling, Multiplier, Shuffled])
@pytest.mark.parametrize("allocation", ["latency", "global"])
def test_pruned_equals_masked_reference(cls, allocation):
    torch.manual_seed(0)
    model = _randomise_bn(cls())
    x = torch.randn(2, 3, 6, 6)
    pruned, _ = assert_prune_matches_reference(model, x, 0.5, allocation=allocation)
    for m in pruned.modules():
        if isinstance(m, nn.Conv2d):  # still a valid conv: equal groups on both sides
            assert m.in_channels % m.groups == 0 and m.out_channels % m.groups == 0
            assert m.weight.shape[:2] == (m.out_channels, m.in_channels // m.groups)


def test_grouped_conv_keeps_its_groups_and_tiles_both_sides():
    model = Grouped()
    g = build_dependency_graph(model, torch.randn(1, 3, 4, 4))
    (inp,) = [grp for grp in g.groups if any(m.module == "g.0" and m.role == "in" for m in grp.members)]
    (out,) = [grp for grp in g.groups if any(m.module == "g.0" and m.role == "out" for m in grp.members)]
    assert inp.size == 2 and {(m.module, m.tile) for m in inp.members if m.role == "out"} == {("stem.0", 4)}
    assert out.size == 3 and [m.tile for m in out.members if m.module == "g.0"] == [4]
    pruned = prune(model, torch.randn(1, 3, 4, 4), ratio=0.5)
    conv = pruned.g[0]
    assert conv.groups == 4 and conv.in_channels == 4 and conv.out_channels == 8 and pruned.stem[0].out_channels == 4


def test_pruned_grouped_conv_equals_dense_conv_of_the_kept_slices():
    """Hand-built reference: the kept within-group input columns and output filters of the original weight."""
    torch.manual_seed(1)
    model = _randomise_bn(Grouped())
    x = torch.randn(2, 3, 5, 5)
    pruner = Pruner(model, (x,), PruneConfig(ratio=0.5))
    pruned = pruner.apply(0.5).eval()
    keep = pruner.step(0.5)
    gin = next(grp for grp in pruner.groups if any(m.module == "g.0" and m.role == "in" for m in grp.members))
    gout = next(grp for grp in pruner.groups if any(m.module == "g.0" and m.role == "out" for m in grp.members))
    cols = keep[gin.id]  # within-group input positions (of 2)
    rows = [k * 3 + j for k in range(4) for j in keep[gout.id]]  # within-group output positions (of 3), per group
    stem_rows = [k * 2 + c for k in range(4) for c in cols]
    w = model.g[0].weight.detach()[rows][:, cols]
    torch.testing.assert_close(pruned.g[0].weight, w)
    with torch.no_grad():
        s = model.stem(x)[:, stem_rows]
        y = F.conv2d(s, w, padding=1, groups=4)
        torch.testing.assert_close(pruned.g[0](pruned.stem(x)), y)


def test_zero_filters_of_one_position_in_every_group_prune_away_exactly():
    torch.manual_seed(2)
    model = _randomise_bn(Grouped())
    x = torch.randn(2, 3, 5, 5)
    conv, bn = model.g[0], model.g[1]
    with torch.no_grad():  # position 1 of each of the 4 output groups (3 wide) produces zero; its consumer ignores it
        rows = [1, 4, 7, 10]
        conv.weight[rows] = 0
        bn.weight[rows] = 0
        bn.bias[rows] = 0
        model.c[0].weight[:, rows] = 0
    pruned = prune(model, x, ratio=0.34, ignored_layers=["stem.0", "c.0"])
    assert pruned.g[0].out_channels == 8 and pruned.g[0].groups == 4 and pruned.c[0].in_channels == 8
    torch.testing.assert_close(pruned(x), model(x), atol=1e-6, rtol=0)


def test_nothing_pruned_is_identical():
    torch.manual_seed(3)
    for cls in (Grouped, Multiplier, Shuffled):
        model = _randomise_bn(cls())
        x = torch.randn(2, 3, 5, 5)
        torch.testing.assert_close(prune(model, x, ratio=0.0)(x), model(x), atol=1e-6, rtol=0)


def test_depthwise_multiplier_keeps_filters_of_an_input_together():
    pruned = prune(Multiplier(), torch.randn(1, 3, 4, 4), ratio=0.5)
    dw = pruned.dw[0]
    assert dw.groups == dw.in_channels == pruned.stem[0].out_channels and dw.out_channels == 2 * dw.in_channels
    assert pruned.pw[0].groups == 2


def test_straddling_segment_is_blocked_not_guessed():
    model = Straddling()
    pruned = prune(model, torch.randn(1, 3, 4, 4), ratio=0.5)
    assert pruned.a[0].out_channels == 2 and pruned.b[0].out_channels == 6 and pruned.g[0].in_channels == 8
    assert pruned.g[0].out_channels == 4  # its own outputs are still pruned, 2 per group
