"""Attention heads: whole heads are pruned from q, k, v (qkv rows), proj (columns) and the module's head count;
the head width and softmax scale stay. Checked against the masked reference and a hand-written attention."""

import warnings

import pytest
import torch
from torch import nn

from slimkit.graph import build_dependency_graph
from slimkit.layers.tokens import Block
from slimkit.prune import PruneConfig, Pruner, prune
from slimkit.prune.allocation import unit_multiple

from .reference import assert_prune_matches_reference

HEADS, DIM = 4, 16
KEEP_STREAM = ("emb",)  # the residual stream runs through LayerNorms (not exact when cut): kept in exactness tests


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(6, DIM)
        self.block = Block(DIM, HEADS, qkv_bias=True)
        self.head = nn.Linear(DIM, 3)

    def forward(self, x):
        return self.head(self.block(self.emb(x)).mean(1))


def _net(seed=0):
    torch.manual_seed(seed)
    return Net().eval(), torch.randn(2, 5, 6)


def test_head_group_members():
    model, x = _net()
    g = build_dependency_graph(model, x)
    (grp,) = [grp for grp in g.groups if any(m.role == "heads" for m in grp.members)]
    assert grp.size == HEADS
    got = {(m.module, m.role, m.repeat, m.tile) for m in grp.members}
    assert got == {("block.attn.qkv", "out", 4, 3), ("block.attn", "heads", 1, 1), ("block.attn.proj", "in", 4, 1)}
    # rounding to vector blocks counts channels: a head of 4 is half a block of 8, a quarter of 16
    assert (unit_multiple(grp, 8), unit_multiple(grp, 16), unit_multiple(grp, 2), unit_multiple(grp, None)) == (
        2, 4, 1, None)


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_pruned_heads_equal_masked_reference(allocation):
    model, x = _net()
    pruned, _ = assert_prune_matches_reference(model, x, 0.5, allocation=allocation, ignored_layers=KEEP_STREAM)
    attn = pruned.block.attn
    assert attn.num_heads == 2 and attn.head_dim == 4 and attn.scale == 4 ** -0.5
    assert attn.qkv.out_features == 3 * 2 * 4 and attn.proj.in_features == 2 * 4


def _attention_by_hand(model, x, heads):
    """Multi-head attention over the listed heads only, from the original weights (einsum, no module code)."""
    a = model.block.attn
    z = model.block.norm1(model.emb(x))
    w, b = a.qkv.weight.view(3, HEADS, 4, DIM), a.qkv.bias.view(3, HEADS, 4)
    qkv = torch.einsum("bnc,thdc->tbhnd", z, w[:, heads]) + b[:, heads][:, None, :, None, :]
    att = (torch.einsum("bhnd,bhmd->bhnm", qkv[0], qkv[1]) * 4 ** -0.5).softmax(-1)
    out = torch.einsum("bhnm,bhmd->bnhd", att, qkv[2]).flatten(2)
    cols = torch.tensor([h * 4 + d for h in heads for d in range(4)])
    return out @ a.proj.weight[:, cols].T + a.proj.bias


def test_pruned_attention_equals_hand_written_attention_of_kept_heads():
    model, x = _net(1)
    pruner = Pruner(model, (x,), PruneConfig(ratio=0.5, ignored_layers=("emb", "block.mlp.fc1")))
    pruned = pruner.apply(0.5).eval()
    (grp,) = [g for g in pruner.groups if any(m.role == "heads" for m in g.members)]
    kept = pruner.step(0.5)[grp.id]
    with torch.no_grad():
        got = pruned.block.attn(pruned.block.norm1(pruned.emb(x)))
        torch.testing.assert_close(got, _attention_by_hand(model, x, kept), atol=1e-5, rtol=1e-5)


def test_zero_head_prunes_away_exactly_and_nothing_pruned_is_identical():
    model, x = _net(2)
    torch.testing.assert_close(prune(model, x, ratio=0.0)(x), model(x), atol=1e-6, rtol=0)
    a = model.block.attn
    with torch.no_grad():  # head 2: q, k, v rows (and biases) and the proj columns it feeds are zero
        for t in range(3):
            a.qkv.weight[t * DIM + 8: t * DIM + 12] = 0
            a.qkv.bias[t * DIM + 8: t * DIM + 12] = 0
        a.proj.weight[:, 8:12] = 0
    pruned = prune(model, x, ratio=0.25, ignored_layers=["emb", "block.mlp.fc1"], allocation="uniform")
    assert pruned.block.attn.num_heads == 3
    torch.testing.assert_close(pruned(x), model(x), atol=1e-6, rtol=0)


def test_split_without_heads_or_free_size_is_blocked():
    class FixedSplit(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 8), nn.Linear(4, 3)

        def forward(self, x):
            return self.b(self.a(x).reshape(2, 5, 2, 4).sum(2))  # fixed sizes: pruning `a` would break it

    model = FixedSplit()
    g = build_dependency_graph(model, torch.randn(2, 5, 6))
    assert not any(m.module == "a" and m.role == "out" for grp in g.groups for m in grp.members)


def test_multihead_attention_module_is_left_whole():
    class WithMHA(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Linear(6, 8)
            self.mha = nn.MultiheadAttention(8, 2, batch_first=True)
            self.fc1, self.fc2 = nn.Linear(8, 12), nn.Linear(12, 3)

        def forward(self, x):
            z = self.emb(x)
            z = self.mha(z, z, z, need_weights=False)[0]
            return self.fc2(torch.relu(self.fc1(z))).mean(1)

    torch.manual_seed(0)
    model = WithMHA().eval()
    x = torch.randn(2, 5, 6)
    pruned, _ = assert_prune_matches_reference(model, x, 0.5, allocation="uniform")
    assert pruned.mha.in_proj_weight.shape == (24, 8) and pruned.emb.out_features == 8 and pruned.fc1.out_features == 6


@pytest.mark.slow
def test_timm_vit_heads_are_pruned():
    pytest.importorskip("timm")
    import slimkit

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = slimkit.create_model("timm:deit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(prune(model, x, ratio=0.0)(x), model(x), atol=1e-5, rtol=0)
    # the embedding stream runs through LayerNorms (not exact when cut): kept whole for the exact comparison
    pruned, _ = assert_prune_matches_reference(model, x, 0.5, allocation="uniform",
                                               ignored_layers=("patch_embed.proj",))
    attn = pruned.blocks[0].attn
    assert attn.num_heads == 2 and attn.attn_dim == 128 and attn.qkv.out_features == 3 * 128
    assert attn.scale == 64 ** -0.5
    # with the stream: the class token, position embedding and every LayerNorm follow the embedding width
    whole = prune(model, x, ratio=0.5, allocation="uniform")  # a hand count: the same share in every group
    width = whole.patch_embed.proj.out_channels
    assert width == 96 and whole.cls_token.shape[-1] == whole.pos_embed.shape[-1] == width
    assert whole.blocks[0].norm1.normalized_shape == (width,) and whole(x).shape == (2, 10)


def test_hiera_heads_attribute_prunes_whole_heads_exactly():
    """timm's Hiera declares its head count as `heads` (not `num_heads`): whole heads go, `heads` and the `dim_out`
    its output reshape reads follow, the head width, q pooling stride and window stay; heads that compute nothing
    leave the output identical."""
    hiera = pytest.importorskip("timm.models.hiera")
    torch.manual_seed(0)
    model = hiera.Hiera(img_size=(32, 32), embed_dim=16, num_heads=1, stages=(1, 2, 2, 1), q_pool=2,
                        mask_unit_size=(4, 4), num_classes=5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # timm zero-initialises the classifier: every output would be equal whatever was pruned
        torch.nn.init.normal_(model.head.fc.weight, std=0.5)
    assert model(x).std() > 0.01
    attns = [m for m in model.modules() if isinstance(m, hiera.MaskUnitAttention)]
    before = [a.heads for a in attns]
    assert before == [1, 2, 2, 4, 4, 8]
    with torch.no_grad():  # the second half of every attention's heads: q, k, v rows and proj columns zero
        for a in attns:
            d, keep = a.head_dim, max(1, a.heads // 2)
            for t in range(3):
                a.qkv.weight[t * a.dim_out + keep * d: (t + 1) * a.dim_out] = 0
                a.qkv.bias[t * a.dim_out + keep * d: (t + 1) * a.dim_out] = 0
            a.proj.weight[:, keep * d:] = 0
    pruned = prune(model, x[:1], ratios={"heads": 0.5}).eval()
    after = [m for m in pruned.modules() if isinstance(m, hiera.MaskUnitAttention)]
    assert [a.heads for a in after] == [1, 1, 1, 2, 2, 4]
    assert [a.dim_out for a in after] == [a.heads * 16 for a in after] and all(a.head_dim == 16 for a in after)
    # attributes that merely equal a head count (the 4-head stage's q_stride = 4) are not head counts
    assert [(a.q_stride, a.window_size) for a in after] == [(a.q_stride, a.window_size) for a in attns]
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=1e-5)
