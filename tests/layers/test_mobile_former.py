import math

import pytest
import torch

from slimkit.errors import ConfigError
from slimkit.layers.mobile_former import (
    ChannelShuffle,
    Former,
    FormerToMobile,
    MobileSubBlock,
    MobileToFormer,
    TokenDynamicReLU,
)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for one head, rows = queries (written out, no batching)."""
    scores = q @ k.T / math.sqrt(q.shape[1])
    return torch.softmax(scores, dim=1) @ v


def _lin(layer: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ layer.weight.T + layer.bias


def _ln(layer: torch.nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    mu, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mu) / torch.sqrt(var + layer.eps) * layer.weight + layer.bias


def _randomize(module: torch.nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * 0.5)


@pytest.mark.parametrize("gate", [False, True])
def test_mobile_to_former_is_per_head_attention_of_tokens_over_pixels(gate):
    torch.manual_seed(0)
    heads, c, d, m = 2, 6, 4, 3
    layer = MobileToFormer(c, d, num_heads=heads, gate=gate).double()
    _randomize(layer)
    x, z = torch.randn(2, c, 3, 2, dtype=torch.float64), torch.randn(2, m, d, dtype=torch.float64)
    out = layer(x, z)
    ch = c // heads
    for n in range(2):
        q = _lin(layer.q, z[n])  # M x C
        pix = x[n].reshape(c, -1).T  # HW x C: keys = values = the map, unprojected
        mixed = torch.cat([_attend(q[:, i * ch:(i + 1) * ch], pix[:, i * ch:(i + 1) * ch], pix[:, i * ch:(i + 1) * ch])
                           for i in range(heads)], dim=1)
        if gate:
            mixed = mixed * 2 * torch.clamp((_lin(layer.gate, z[n]) + 3) / 6, 0, 1)
        ref = _ln(layer.norm, z[n] + _lin(layer.proj, mixed))
        torch.testing.assert_close(out[n], ref)
    assert out.shape == z.shape


def test_former_to_mobile_is_per_head_attention_of_pixels_over_tokens():
    torch.manual_seed(0)
    heads, c, d, m = 2, 6, 4, 3
    layer = FormerToMobile(c, d, num_heads=heads).double()
    _randomize(layer)
    x, z = torch.randn(2, c, 3, 2, dtype=torch.float64), torch.randn(2, m, d, dtype=torch.float64)
    out = layer(x, z)
    ch = c // heads
    for n in range(2):
        k, v = _lin(layer.k, z[n]), _lin(layer.v, z[n])  # M x C
        for r in range(3):
            for s in range(2):
                pixel = x[n, :, r, s]  # the query is the pixel's own channels
                got = torch.cat([_attend(pixel[None, i * ch:(i + 1) * ch], k[:, i * ch:(i + 1) * ch],
                                         v[:, i * ch:(i + 1) * ch])[0] for i in range(heads)])
                torch.testing.assert_close(out[n, :, r, s], pixel + got)


@pytest.mark.parametrize("kv_proj", [False, True])
def test_former_is_a_post_norm_transformer_layer(kv_proj):
    torch.manual_seed(0)
    heads, d, m = 2, 8, 5
    layer = Former(d, num_heads=heads, kv_proj=kv_proj).double()
    _randomize(layer)
    z = torch.randn(3, m, d, dtype=torch.float64)
    out = layer(z)
    dh = d // heads
    for n in range(3):
        q = _lin(layer.q, z[n])
        if kv_proj:
            kv = _lin(layer.kv, z[n])
            k, v = kv[:, :d], kv[:, d:]
        else:
            k = v = z[n]
        att = torch.cat([_attend(q[:, i * dh:(i + 1) * dh], k[:, i * dh:(i + 1) * dh], v[:, i * dh:(i + 1) * dh])
                         for i in range(heads)], dim=1)
        y = _ln(layer.norm1, z[n] + _lin(layer.proj, att))
        hidden = torch.nn.functional.gelu(_lin(layer.ffn[0], y))
        torch.testing.assert_close(out[n], _ln(layer.norm2, y + _lin(layer.ffn[2], hidden)))
    assert layer.ffn[0].out_features == 2 * d  # FFN expansion 2, as in the paper


def test_dynamic_relu_follows_the_first_token_only():
    torch.manual_seed(0)
    act = TokenDynamicReLU(4, 8)
    _randomize(act)
    x = torch.randn(2, 4, 3, 3)
    z = torch.randn(2, 3, 8)
    out = act(x, z)
    coef = torch.clamp((_lin(act.mlp[2], torch.relu(_lin(act.mlp[0], z[:, 0]))) + 3) / 6, 0, 1) * 2 - 1
    a1, a2 = coef[:, :4, None, None] + 1, coef[:, 4:, None, None]
    torch.testing.assert_close(out, torch.maximum(a1 * x, a2 * x))
    other = z.clone()
    other[:, 1:] = torch.randn(2, 2, 8)  # tokens after the first do not matter
    torch.testing.assert_close(act(x, other), out)
    first = z.clone()
    first[:, 0] = torch.randn(2, 8) * 3  # the first token does
    assert (act(x, first) - out).abs().max() > 1e-2
    torch.nn.init.zeros_(act.mlp[2].weight)
    torch.nn.init.zeros_(act.mlp[2].bias)
    torch.testing.assert_close(act(x, z), torch.relu(x))  # zero MLP output: slopes (1, 0), a plain ReLU


@pytest.mark.parametrize("stride,groups", [(1, 1), (2, 1), (1, 2), (2, 2)])
def test_mobile_sub_block_shapes_and_token_dependence(stride, groups):
    torch.manual_seed(0)
    block = MobileSubBlock(8, 12, stride, expand=2, token_dim=16, expand2=2, groups=groups).eval()
    _randomize(block)
    x, z = torch.randn(2, 8, 6, 6), torch.randn(2, 3, 16)
    out = block(x, z)
    assert out.shape == (2, 12, 6 // stride, 6 // stride)
    z2 = z.clone()
    z2[:, 0] += 2.0
    assert not torch.allclose(block(x, z2), out)
    n_dyn = sum(isinstance(m, TokenDynamicReLU) for m in block.modules())
    assert n_dyn == 2


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_bad_head_counts_raise_config_errors():
    with pytest.raises(ConfigError, match="heads"):
        MobileToFormer(10, 8, num_heads=3)
    with pytest.raises(ConfigError, match="heads"):
        Former(10, num_heads=4)
    with pytest.raises(ConfigError, match="groups"):
        MobileSubBlock(6, 10, 1, expand=2, token_dim=8, groups=4)
