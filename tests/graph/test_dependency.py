"""Dependency analysis reads a model and never changes it; groups and blocked reasons are what they should be."""

import torch
from torch import nn

from slimkit.graph import build_dependency_graph
from slimkit.models import create_model


def test_analysis_does_not_change_the_model():
    model = create_model("resnet20")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    build_dependency_graph(model, torch.randn(2, 3, 32, 32))
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # BN stats untouched too


def test_resnet20_has_nine_block_groups_and_three_residual_streams():
    g = build_dependency_graph(create_model("resnet20"), torch.randn(1, 3, 32, 32))
    sizes = sorted(grp.size for grp in g.groups)
    assert sizes == [16] * 4 + [32] * 4 + [64] * 4
    residual = [grp for grp in g.groups if len(grp.producers) > 1]
    assert len(residual) == 3
    reasons = {r for _, r in g.blocked}
    assert {"model input", "model output"} <= reasons


def test_flatten_into_linear_expands_by_spatial_size():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 25, 2))
    g = build_dependency_graph(model, torch.randn(1, 3, 5, 5))
    (grp,) = g.groups
    linear = [m for m in grp.members if m.module == "2"][0]
    assert linear.role == "in" and linear.repeat == 25 and grp.size == 4


def test_unknown_ops_block_instead_of_guessing():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 1)
            self.b = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = self.a(x)
            return self.b(torch.roll(y, 1, dims=1))  # a channel shuffle the engine does not model

    g = build_dependency_graph(Odd(), torch.randn(1, 3, 4, 4))
    assert not any(any(m.module == "a" for m in grp.producers) for grp in g.groups)
    assert any("roll" in r for _, r in g.blocked)


class _DataDependent(nn.Module):
    """A block torch.fx cannot trace (a branch on tensor values)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if float(x.mean()) > -1e9 else x


class _WithOpaque(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 6, 1)
        self.block = nn.Sequential(nn.ReLU(), _DataDependent(6))
        self.c = nn.Conv2d(6, 10, 1)
        self.fc = nn.Linear(10, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c(self.block(self.b(torch.relu(self.a(x)))))
        return self.fc(x.mean((2, 3)))


def test_untraceable_submodule_is_kept_whole_and_the_rest_is_analysed():
    from slimkit.graph.trace import trace, untraceable_modules

    model = _WithOpaque()
    assert untraceable_modules(model) == ["block.1"]
    x = torch.randn(1, 3, 8, 8)
    gm = trace(model, (x,))
    assert gm.meta["opaque_modules"] == ["block.1"]
    torch.testing.assert_close(gm(x), model(x))
    g = build_dependency_graph(model, x)
    prunable = {m.module for grp in g.groups for m in grp.members}
    assert {"a", "b"} <= prunable and "c" in prunable  # a->b and c->fc spaces are free
    assert not any(m.module.startswith("block") for grp in g.groups for m in grp.members)
    assert any(m.module == "b" and m.role == "out" for grp, _ in g.blocked for m in grp.members)  # feeds the block


def test_prune_through_a_model_with_an_untraceable_block():
    import slimkit
    from slimkit.profile import count_macs

    torch.manual_seed(0)
    model = _WithOpaque().eval()
    x = torch.randn(2, 3, 8, 8)
    small = slimkit.prune(model, x[:1], ratio=0.5, allocation="uniform")  # half of each group, by hand
    assert small(x).shape == (2, 2)
    assert small.block[1].conv.weight.shape == model.block[1].conv.weight.shape  # untouched
    assert small.a.out_channels == 4 and small.c.out_channels == 5
    assert count_macs(small, x[:1]) < count_macs(model, x[:1])


def test_ties_compose_to_the_coarsest_common_layout():
    from slimkit.graph.spaces import Member, _Spaces

    sp = _Spaces()
    p = sp.new(12)
    sp.add(p, Member("conv", "out"))
    sp.tie(p, sp.new(6))  # 2 groups of 6: channel c is c mod 6
    leaf, k = sp.leaf(p)
    assert (sp.size[leaf], k) == (6, 1) and sp.members[leaf] == [Member("conv", "out", tile=2)]
    sp.tie(p, sp.new(4))  # 3 groups of 4 as well: only c mod gcd(6, 4) = c mod 2 is left
    leaf, _ = sp.leaf(p)
    assert sp.size[leaf] == 2 and sp.members[leaf] == [Member("conv", "out", tile=6)]
    heads = sp.new(3)
    q = sp.new(24)
    sp.tie(q, heads, 4)  # (2, 3, 4): qkv-like, head h owns 4 consecutive features in each of 2 tiles
    assert sp.leaf(q) == (heads, 4)
    sp.add(q, Member("qkv", "out"))
    assert sp.members[heads][0].index(3)[1].tolist() == [4, 5, 6, 7, 16, 17, 18, 19]


def test_grouped_conv_reads_its_input_as_tiles():
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 6, 3, groups=2), nn.Flatten(), nn.Linear(6 * 16, 2))
    g = build_dependency_graph(model, torch.randn(1, 3, 6, 6))
    (inp,) = g.group_of("0")
    assert inp.size == 4 and {(m.module, m.role, m.tile) for m in inp.members} == {("0", "out", 2), ("1", "in", 1)}
    (out,) = [grp for grp in g.group_of("1") if grp is not inp]
    assert out.size == 3 and {(m.module, m.role, m.tile, m.repeat) for m in out.members} == {
        ("1", "out", 2, 1), ("3", "in", 2, 16)}


class _Pad(nn.Module):
    """conv -> zero padding of H and W (or of the channels) -> conv."""

    def __init__(self, pad):
        super().__init__()
        self.a, self.b, self.pad = nn.Conv2d(3, 8, 1), nn.Conv2d(8 + sum(pad[4:6]), 4, 1), pad

    def forward(self, x):
        return self.b(nn.functional.pad(self.a(x), self.pad))


def test_padding_other_dimensions_keeps_the_channels_padding_them_blocks():
    g = build_dependency_graph(_Pad((1, 2, 0, 1)), torch.randn(1, 3, 5, 5))  # W and H padded: a.out feeds b.in
    assert [(m.module, m.role) for m in g.group_of("a")[0].members] == [("a", "out"), ("b", "in")]
    g = build_dependency_graph(_Pad((0, 0, 0, 0, 1, 0)), torch.randn(1, 3, 5, 5))  # one zero channel in front
    assert not g.group_of("a") and any("padding of the channel" in why for _, why in g.blocked)
