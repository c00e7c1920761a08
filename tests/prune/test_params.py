"""Parameters used directly along the channels (layer scale, position embedding, class token) are pruned with the
channels they meet; whole-channel slices and torchvision's stochastic depth pass channels through. Checked against
the masked dense reference (tests/prune/reference.py) and by hand on the sliced tensors."""

import pytest
import torch
from torch import nn
from torchvision.ops import StochasticDepth

from slimkit.errors import PruneError
from slimkit.graph import build_dependency_graph
from slimkit.prune import load, prune, save

from .reference import assert_prune_matches_reference

C = 8


class LayerScaleNet(nn.Module):
    """Two residual blocks: timm style (`gamma.reshape(1, -1, 1, 1)`) and torchvision style ((C, 1, 1) parameter)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, C, 3, padding=1)
        self.a1, self.a2 = nn.Conv2d(C, 16, 1), nn.Conv2d(16, C, 1)
        self.gamma = nn.Parameter(torch.rand(C) + 0.5)
        self.b1, self.b2 = nn.Conv2d(C, 12, 1), nn.Conv2d(12, C, 1)
        self.layer_scale = nn.Parameter(torch.rand(C, 1, 1) + 0.5)
        self.drop = StochasticDepth(0.2, "row")
        self.head = nn.Linear(C, 4)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.a2(torch.relu(self.a1(x))) * self.gamma.reshape(1, -1, 1, 1)
        x = x + self.drop(self.layer_scale * self.b2(torch.relu(self.b1(x))))
        return self.head(x.mean((2, 3)))


class TokenNet(nn.Module):
    """ViT-style: a class token concatenated along the tokens, a position embedding added, a residual MLP."""

    def __init__(self, dim=C, tokens=5):
        super().__init__()
        self.embed = nn.Linear(6, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, tokens + 1, dim))
        self.fc1, self.fc2 = nn.Linear(dim, 16), nn.Linear(16, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.head(x[:, 0])


def _stream_group(model, x, member):
    g = build_dependency_graph(model, x)
    (grp,) = [grp for grp in g.groups if any((m.module, m.role) == member for m in grp.members)]
    return grp


def test_layer_scale_parameters_join_the_residual_stream():
    torch.manual_seed(0)
    model, x = LayerScaleNet().eval(), torch.randn(2, 3, 6, 6)
    grp = _stream_group(model, x, ("", "param:gamma:0"))
    roles = {(m.module, m.role) for m in grp.members}
    assert {("stem", "out"), ("a2", "out"), ("b2", "out"), ("", "param:layer_scale:0"), ("head", "in")} <= roles


def test_pruned_layer_scale_model_equals_masked_reference_and_slices_the_scales():
    torch.manual_seed(1)
    model, x = LayerScaleNet().eval(), torch.randn(2, 3, 6, 6)
    pruned, pruner = assert_prune_matches_reference(model, x, 0.5)
    grp = _stream_group(model, x, ("", "param:gamma:0"))
    kept = pruner.step(0.5)[grp.id]
    assert pruned.gamma.shape == (len(kept),) and pruned.layer_scale.shape == (len(kept), 1, 1)
    torch.testing.assert_close(pruned.gamma.data, model.gamma.data[kept])
    torch.testing.assert_close(pruned.layer_scale.data, model.layer_scale.data[kept])


def test_zero_layer_scale_channels_prune_away_exactly():
    """A stream channel that every block scales to zero and the stem never writes is dead: removing it is exact."""
    torch.manual_seed(2)
    model, x = LayerScaleNet().eval(), torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        for p in (model.stem.weight, model.stem.bias, model.gamma, model.layer_scale, model.a2.weight, model.b2.weight,
                  model.a2.bias, model.b2.bias):
            p[: C // 2] = 0
    pruned = prune(model, x, ratio=0.5, importance="l1", ignored_layers=("a1", "b1"),  # only the stream is cut
                   allocation="uniform")
    assert pruned.gamma.numel() == C // 2
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=1e-5)


def test_class_token_and_position_embedding_are_sliced_with_the_embedding_dim():
    torch.manual_seed(3)
    model, x = TokenNet().eval(), torch.randn(2, 5, 6)
    grp = _stream_group(model, x, ("", "param:cls_token:2"))
    assert ("", "param:pos_embed:2") in {(m.module, m.role) for m in grp.members}
    pruned, pruner = assert_prune_matches_reference(model, x, 0.5)
    kept = pruner.step(0.5)[grp.id]
    torch.testing.assert_close(pruned.cls_token.data, model.cls_token.data[..., kept])
    torch.testing.assert_close(pruned.pos_embed.data, model.pos_embed.data[..., kept])


def test_pruned_layer_scale_model_saves_and_reloads(tmp_path):
    torch.manual_seed(4)
    model, x = LayerScaleNet().eval(), torch.randn(2, 3, 6, 6)
    pruned = prune(model, x, ratio=0.5)
    save(pruned, tmp_path / "m.safetensors")
    torch.manual_seed(99)
    back = load(tmp_path / "m.safetensors", LayerScaleNet()).eval()
    assert back.gamma.shape == pruned.gamma.shape
    torch.testing.assert_close(back(x), pruned(x))


class SharedScale(nn.Module):
    """One parameter used at two places: both uses must keep the same channels."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, C, 1), nn.Conv2d(3, C, 1)
        self.scale = nn.Parameter(torch.rand(C, 1, 1))
        self.head = nn.Conv2d(2 * C, 2, 1)

    def forward(self, x):
        return self.head(torch.cat([self.a(x) * self.scale, self.b(x) * self.scale], 1))


def test_a_parameter_used_twice_couples_both_uses():
    model, x = SharedScale().eval(), torch.randn(1, 3, 4, 4)
    grp = _stream_group(model, x, ("", "param:scale:0"))
    assert {"a", "b"} <= {m.module for m in grp.members if m.role == "out"}
    assert_prune_matches_reference(model, x, 0.5)


class ConstantScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, C, 1)
        self.head = nn.Conv2d(C, 2, 1)

    def forward(self, x):
        return self.head(self.a(x) * torch.arange(1.0, C + 1).view(1, -1, 1, 1))


def test_a_constant_along_the_channels_still_blocks():
    g = build_dependency_graph(ConstantScale().eval(), torch.randn(1, 3, 4, 4))
    assert not g.group_of("a")
    assert any("constant along the channels" in why for _, why in g.blocked)


class Sliced(nn.Module):
    def __init__(self, stop):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, C, 1), nn.Conv2d(C, C, 1)
        self.head = nn.Conv2d(2 * C, 2, 1)
        self.stop = stop

    def forward(self, x):
        y = self.a(x)
        return self.head(torch.cat([y, self.b(y)], 1)[:, : self.stop])


def test_a_slice_keeping_every_channel_passes_and_a_partial_one_blocks():
    x = torch.randn(1, 3, 4, 4)
    whole = Sliced(2 * C).eval()
    assert build_dependency_graph(whole, x).group_of("a")
    assert_prune_matches_reference(whole, x, 0.5)
    assert build_dependency_graph(Sliced(2 * C + 5).eval(), x).group_of("a")  # a stop past the end keeps all
    head = nn.Conv2d(2 * C - 1, 2, 1)
    partial = Sliced(2 * C - 1).eval()
    partial.head = head
    g = build_dependency_graph(partial, x)
    assert not g.group_of("a") and any("indexing along the channels" in why for _, why in g.blocked)


class ExpandedAcrossTokens(nn.Module):
    """A (C, 1) parameter expanded to (C, C) scales the tokens, not the channels: it must not be sliced."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, C)
        self.s = nn.Parameter(torch.rand(C, 1))
        self.head = nn.Linear(C, 2)

    def forward(self, x):  # x: (N, C tokens, 3)
        return self.head(self.a(x) * self.s.expand(C, C))


def test_an_expand_that_makes_the_channel_position_ambiguous_blocks():
    model, x = ExpandedAcrossTokens().eval(), torch.randn(2, C, 3)
    g = build_dependency_graph(model, x)
    assert not g.group_of("a")
    with pytest.raises(PruneError, match="parameter or constant along the channels"):  # a clear refusal
        prune(model, x, ratio=0.5)
