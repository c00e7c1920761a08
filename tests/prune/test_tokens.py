"""Token reduction: reducers keep the class token and static shapes, insertion keeps every module's name, the
record replays, ONNX exports; what stays exact: keeping every token changes nothing, and a dropped token that no
kept token attends to (and that is not pooled) does not change the class token's output."""

import pytest
import torch
from torch import nn

from slimkit.layers.token_reduction import TokenDrop, TokenMerge, TokenSelect
from slimkit.layers.tokens import Block
from slimkit.prune import find_token_stack, load, prune, reduce_tokens, save
from slimkit.prune.tokens import default_token_layers, token_step


class TinyViT(nn.Module):
    """Patch embedding, class token, position embedding, 4 blocks, class-token head (the ViT layout)."""

    def __init__(self, dim=16, depth=4):
        super().__init__()
        self.patch = nn.Conv2d(1, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, dim) * 0.1)
        self.blocks = nn.Sequential(*[Block(dim, 2, qkv_bias=True) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def _data(n=3, b=16):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(b, 1, 16, 16, generator=g), torch.randint(0, 3, (b,), generator=g)) for _ in range(n)]


@pytest.fixture
def vit():
    torch.manual_seed(0)
    return TinyViT().eval(), torch.randn(2, 1, 16, 16)


@pytest.mark.parametrize("reducer", [TokenSelect([0, 3, 5, 9], 1), TokenDrop(4, 1), TokenDrop(4, 1, fuse=False),
                                     TokenMerge(6, 1)])
def test_reducers_keep_the_class_token_first_and_a_fixed_count(reducer):
    x = torch.randn(3, 17, 8)
    out = reducer(x)
    want = {TokenSelect: 5, TokenDrop: 6 if getattr(reducer, "fuse", False) else 5, TokenMerge: 11}[type(reducer)]
    assert out.shape == (3, want, 8)
    torch.testing.assert_close(out[:, 0], x[:, 0])


def test_token_select_takes_the_listed_positions_and_drop_the_most_attended():
    x = torch.randn(2, 9, 4)
    torch.testing.assert_close(TokenSelect([1, 4], 1)(x)[:, 1:], x[:, [2, 5]])
    x = torch.zeros(1, 5, 4)
    x[0, 0] = torch.tensor([1.0, 0, 0, 0])
    x[0, 3] = torch.tensor([5.0, 0, 0, 0])  # the token most similar to the class token
    out = TokenDrop(1, 1, fuse=False)(x)
    torch.testing.assert_close(out[0, 1], x[0, 3])


def test_token_merge_averages_each_merged_pair():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # tokens 0, 2 (set A); tokens 1, 3 (set B)
    x = torch.stack([a[0], a[0] * 2, a[1], -a[1]])[None]  # token 0 ~ token 1; token 2 opposite to token 3
    out = TokenMerge(1, num_prefix=0)(x)[0]
    assert out.shape == (3, 2)
    torch.testing.assert_close(out[0], x[0, 2])  # the unmerged A token first
    torch.testing.assert_close(out[1], (x[0, 0] + x[0, 1]) / 2)  # B token 1 with A token 0 merged into it
    torch.testing.assert_close(out[2], x[0, 3])


def test_find_stack_and_insertion_keeps_names_and_weights(vit):
    model, x = vit
    stack = find_token_stack(model, x)
    assert (stack.container, stack.blocks, stack.tokens, stack.num_prefix) == ("blocks", ("0", "1", "2", "3"), 17, 1)
    assert default_token_layers(4) == (0, 1, 2) and default_token_layers(12) == (2, 5, 8)
    reduced = reduce_tokens(model, x, 0.5, layers=[1], method="drop")
    assert [n for n, _ in reduced.blocks.named_children()] == ["0", "1", "tokens1", "2", "3"]
    sd, ref = reduced.state_dict(), model.state_dict()
    assert all(torch.equal(sd[k], v) for k, v in ref.items())
    assert reduced(x).shape == (2, 3)


def test_keeping_every_token_is_exact_and_a_token_nobody_attends_to_can_go(vit):
    model, x = vit
    step = token_step(find_token_stack(model, x), 0.0, [1], "select", {1: torch.rand(16)})
    assert step["reducers"] == []  # nothing to remove: no reducer
    with torch.no_grad():
        torch.testing.assert_close(TokenSelect(list(range(16)), 1)(model.blocks[0](x.new_zeros(2, 17, 16))),
                                   model.blocks[0](x.new_zeros(2, 17, 16)))
    # one block, a head whose scores rule out token 5 for every query: removing token 5 leaves the class token
    one = nn.Sequential(Block(16, 1, qkv_bias=True)).eval()
    tokens = torch.randn(2, 17, 16)
    bias = torch.zeros(17)
    bias[5] = -1e4  # an additive mask: what an attention that ignores token 5 computes

    def attend(blk, t, mask):
        a = blk.attn
        q, k, v = a.qkv(blk.norm1(t)).reshape(t.shape[0], t.shape[1], 3, 1, 16).permute(2, 0, 3, 1, 4)
        w = ((q * a.scale) @ k.transpose(-2, -1) + mask).softmax(-1)
        return t + a.proj((w @ v).transpose(1, 2).reshape(t.shape[0], t.shape[1], -1))

    with torch.no_grad():
        full = attend(one[0], tokens, bias)[:, 0]
        keep = [i for i in range(16) if i != 4]  # patch position 4 is token 5
        reduced = TokenSelect(keep, 1)(tokens)
        torch.testing.assert_close(attend(one[0], reduced, torch.zeros(16))[:, 0], full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["select", "drop", "merge"])
def test_token_pruning_replays_and_exports(vit, method, tmp_path):
    import slimkit

    model, x = vit
    pruned = prune(model, x, ratios={"tokens": 0.5}, token_method=method, token_layers=[1, 2], data=_data())
    assert pruned(x).shape == (2, 3)
    save(pruned, tmp_path / "p.safetensors")
    fresh = TinyViT().eval()
    again = load(tmp_path / "p.safetensors", fresh)
    torch.testing.assert_close(again(x), pruned(x))
    result = slimkit.export_onnx(pruned, tmp_path / "p.onnx", x)
    assert result.max_abs_diff <= 1e-4


def test_select_needs_labelled_data_and_windowed_models_have_no_stack(vit):
    from slimkit.errors import PruneError

    model, x = vit
    with pytest.raises(PruneError, match="calibration data"):
        prune(model, x, ratios={"tokens": 0.5})
    conv = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    with pytest.raises(PruneError, match="no stack of blocks"):
        find_token_stack(conv, torch.randn(1, 1, 8, 8))


def test_token_layers_outside_the_stack_are_an_error_before_any_scoring(vit, monkeypatch):
    """They were a PruneError blaming copy.deepcopy, after the channels were scored."""
    import slimkit.prune.pruner as pruner_mod
    from slimkit.errors import ConfigError

    monkeypatch.setattr(pruner_mod, "ImportanceContext", lambda *a, **k: pytest.fail("scored first"))
    model, x = vit
    for layers in ([4], [-1]):
        with pytest.raises(ConfigError, match=r"token_layers \[-?\d\] must index the 4 blocks of 'blocks' \(0 .. 3\)"):
            prune(model, x, ratios={"tokens": 0.5}, token_method="drop", token_layers=layers)


def test_too_few_patch_tokens_to_reduce_is_an_error_not_a_model_left_as_it_was():
    """One patch token (a ViT on images as small as its patches) cannot lose any: naming tokens pruned nothing."""
    from slimkit.errors import ConfigError

    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(1, 1, 4, 4)
    model.pos_embed = nn.Parameter(torch.randn(1, 2, 16))  # class token + one 4x4 patch
    with pytest.raises(ConfigError, match="sees 1 patch token at this input size"):
        prune(model, x, ratios={"tokens": 0.5}, token_method="drop")


def test_an_unknown_token_method_is_one_clear_error_everywhere(vit):
    """The config, the record step and a saved record naming no known method all refuse it with the same message."""
    from slimkit.errors import ConfigError
    from slimkit.prune import PruneConfig
    from slimkit.prune.tokens import _make

    model, x = vit
    stack = find_token_stack(model, x)
    for refuse in (lambda: PruneConfig(ratio=0.3, dims=("tokens",), token_method="fast"),
                   lambda: token_step(stack, 0.3, method="fast"),
                   lambda: _make({"method": "fast", "num_prefix": 1})):
        with pytest.raises(ConfigError, match="token_method must be one of select, drop, merge, got 'fast'"):
            refuse()
