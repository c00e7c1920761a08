"""Tiny models, one per coupling type: pruned output == masked dense reference; params == hand counts."""

import pytest
import torch
from torch import nn

from slimkit.graph import build_dependency_graph
from slimkit.profile import count_macs, count_params
from slimkit.prune import prune

from .reference import assert_prune_matches_reference


def cbr(i, o, **kw):
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False, **kw), nn.BatchNorm2d(o), nn.ReLU())


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.a, self.b = cbr(3, 8), cbr(8, 8), cbr(8, 8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.b(self.a(x))
        return self.fc(x.mean((2, 3)))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = cbr(3, 6), cbr(3, 10), cbr(16, 8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.c(torch.cat([self.a(x), self.b(x)], 1)).mean((2, 3)))


class SplitDepthwiseSE(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = cbr(3, 12), cbr(12, 12, groups=12)
        self.se1, self.se2 = nn.Conv2d(6, 3, 1), nn.Conv2d(3, 6, 1)
        self.c = cbr(6, 8)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x):
        x = self.b(self.a(x))
        x1, x2 = x.chunk(2, dim=1)
        s = torch.sigmoid(self.se2(torch.relu(self.se1(x1.mean((2, 3), keepdim=True)))))
        y = self.c(x1 * s + x2)
        return self.fc(torch.flatten(y, 1))


class ChannelsLast(nn.Module):
    """ConvNeXt-style: permute to NHWC, Linear on channels, permute back; GroupNorm per channel; optional
    LayerNorm (which normalises across channels, so pruning it is not exact: tested separately)."""

    def __init__(self, ln: bool = False):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.gn = nn.GroupNorm(8, 8)
        self.ln = nn.LayerNorm(8) if ln else nn.Identity()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = self.gn(self.stem(x))
        y = x.permute(0, 2, 3, 1)
        y = self.fc2(torch.nn.functional.gelu(self.fc1(self.ln(y))))
        x = x + y.permute(0, 3, 1, 2)
        return self.head(x.mean((2, 3)))


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.shared = cbr(3, 8), cbr(8, 8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.shared(self.shared(self.a(x))).mean((2, 3)))


@pytest.mark.parametrize("cls", [Residual, Concat, SplitDepthwiseSE, ChannelsLast, Shared])
@pytest.mark.parametrize("allocation", ["latency", "global"])
def test_pruned_equals_masked_reference(cls, allocation):
    torch.manual_seed(0)
    model = cls()
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 4, 4)
    pruned, pruner = assert_prune_matches_reference(model, x, 0.5, allocation=allocation, round_to=1)
    assert count_macs(pruned, x) < count_macs(model, x)
    assert pruned(x).shape == model(x).shape


def test_residual_group_and_hand_param_count():
    model = Residual()
    g = build_dependency_graph(model, torch.randn(1, 3, 4, 4))
    names = [sorted(m.module + ":" + m.role for m in grp.members) for grp in g.groups]
    # the residual stream couples stem, b (both produce it), a and fc (both consume it)
    assert ["a.0:in", "b.0:out", "b.1:norm", "fc:in", "stem.0:out", "stem.1:norm"] in names
    assert ["a.0:out", "a.1:norm", "b.0:in"] in names
    pruned = prune(model, torch.randn(1, 3, 4, 4), ratio=0.5, allocation="uniform")  # the same share everywhere
    c = 4  # 8 channels -> 4 in both groups
    expected = 3 * c * 9 + 2 * c + c * c * 9 + 2 * c + c * c * 9 + 2 * c + c * 5 + 5
    assert count_params(pruned) == expected


def test_concat_offsets_follow_segments():
    pruned = prune(Concat(), torch.randn(1, 3, 4, 4), ratio=0.5, allocation="uniform")
    assert pruned.a[0].out_channels == 3 and pruned.b[0].out_channels == 5 and pruned.c[0].in_channels == 8


def test_split_depthwise_and_flatten_bookkeeping():
    pruned = prune(SplitDepthwiseSE(), torch.randn(1, 3, 4, 4), ratio=0.5)
    dw = pruned.b[0]
    assert dw.groups == dw.in_channels == dw.out_channels == pruned.a[0].out_channels
    assert pruned.fc.in_features == pruned.c[0].out_channels * 16


def test_layernorm_over_channels_is_pruned_consistently():
    model = ChannelsLast(ln=True)
    pruned = prune(model, torch.randn(1, 3, 4, 4), ratio=0.5, allocation="uniform")
    assert pruned.ln.normalized_shape == (4,) and pruned.ln.weight.shape == (4,) and pruned.fc1.in_features == 4
    assert pruned(torch.randn(2, 3, 4, 4)).shape == (2, 5)
