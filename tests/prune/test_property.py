"""Property test: random small models built from blocks (branches, concat, grouped convs, shuffles, depthwise
multipliers, SE, residuals) prune exactly."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from slimkit.errors import PruneError
from slimkit.graph import build_dependency_graph
from slimkit.layers.micro import ChannelShuffle
from slimkit.profile import count_macs
from slimkit.prune import ALLOCATIONS

from .reference import assert_prune_matches_reference


class Block(nn.Module):
    def __init__(self, kind: str, c: int, out: int):
        super().__init__()
        self.kind = kind
        if kind == "residual":
            self.a, self.b = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        elif kind == "concat":
            self.a, self.b = nn.Conv2d(c, out // 2, 1), nn.Conv2d(c, out - out // 2, 3, padding=1)
        elif kind == "grouped":
            self.a = nn.Conv2d(c, out, 3, padding=1, groups=2 if c % 2 == 0 and out % 2 == 0 else 1)
        elif kind == "shuffle":  # grouped 1x1 then a channel shuffle (ShuffleNet)
            g = 2 if c % 2 == 0 and out % 2 == 0 else 1
            self.a, self.b = nn.Conv2d(c, out, 1, groups=g), ChannelShuffle(g)
        elif kind == "multiplier":  # depthwise with channel multiplier 2
            self.a, self.b = nn.Conv2d(c, 2 * c, 3, padding=1, groups=c), nn.BatchNorm2d(2 * c)
        elif kind == "se":
            self.a, self.s1, self.s2 = nn.Conv2d(c, c, 3, padding=1, groups=c), nn.Conv2d(c, 2, 1), nn.Conv2d(2, c, 1)
        else:  # plain
            self.a, self.b = nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out)

    def forward(self, x):
        if self.kind == "residual":
            return x + torch.relu(self.b(self.a(x)))
        if self.kind == "concat":
            return torch.cat([self.a(x), torch.relu(self.b(x))], 1)
        if self.kind == "grouped":
            return torch.relu(self.a(x))
        if self.kind in ("shuffle", "multiplier"):
            return torch.relu(self.b(self.a(x)))
        if self.kind == "se":
            y = self.a(x)
            return y * torch.sigmoid(self.s2(torch.relu(self.s1(y.mean((2, 3), keepdim=True)))))
        return torch.relu(self.b(self.a(x)))


class Net(nn.Module):
    def __init__(self, kinds, widths, classes=3):
        super().__init__()
        self.stem = nn.Conv2d(2, widths[0], 3, padding=1)
        blocks, c = [], widths[0]
        for kind, w in zip(kinds, widths[1:], strict=True):
            out = c if kind in ("residual", "se") else 2 * c if kind == "multiplier" else w
            blocks.append(Block(kind, c, out))
            c = out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(["plain", "residual", "concat", "grouped", "shuffle", "multiplier", "se"]),
                   min_size=1, max_size=5),
    widths=st.lists(st.integers(2, 12), min_size=6, max_size=6),
    ratio=st.floats(0.1, 0.8),
    allocation=st.sampled_from(ALLOCATIONS),
    seed=st.integers(0, 1000),
)
def test_random_block_models_prune_to_the_masked_reference(kinds, widths, ratio, allocation, seed):
    torch.manual_seed(seed)
    model = Net(kinds, widths[: len(kinds) + 1]).eval()
    x = torch.randn(2, 2, 5, 5)
    if not build_dependency_graph(model, x).groups:  # e.g. stem -> grouped conv -> head: nothing may be cut
        with pytest.raises(PruneError, match="no prunable channel group"):
            assert_prune_matches_reference(model, x, ratio)
        return
    pruned, _ = assert_prune_matches_reference(model, x, ratio, allocation=allocation)
    assert pruned(x).shape == (2, 3)
    assert count_macs(pruned, x) <= count_macs(model, x)
