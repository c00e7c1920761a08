import pytest
import torch

from slimkit.errors import ConfigError
from slimkit.layers.poolformer import LayerScale2d, PatchEmbed, PoolFormerBlock, PoolMixer


def _pool_minus_identity_by_hand(x: torch.Tensor, k: int) -> torch.Tensor:
    """Average of the in-image k x k neighbourhood (padding not counted), minus the centre pixel."""
    n, c, h, w = x.shape
    r = k // 2
    out = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            win = x[:, :, max(0, i - r):min(h, i + r + 1), max(0, j - r):min(w, j + r + 1)]
            out[:, :, i, j] = win.sum((2, 3)) / (win.shape[2] * win.shape[3]) - x[:, :, i, j]
    return out


@pytest.mark.parametrize("k", [3, 5])
def test_pool_mixer_equals_a_hand_computation(k):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 5)
    torch.testing.assert_close(PoolMixer(k)(x), _pool_minus_identity_by_hand(x, k))


def test_pool_mixer_averages_valid_pixels_only():
    # count_include_pad=False (the paper's code): a constant image is a fixed point of the average, so the mixer
    # output is zero everywhere, corners included. Counting the zero padding would give 4/9 - 1 at a corner.
    out = PoolMixer(3)(torch.full((1, 2, 4, 4), 3.0))
    assert torch.equal(out, torch.zeros_like(out))
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 0, 0] = 1.0
    assert PoolMixer(3)(x)[0, 0, 0, 0].item() == pytest.approx(1 / 4 - 1)  # corner window has 4 valid pixels
    assert PoolMixer(3)(x)[0, 0, 1, 1].item() == pytest.approx(1 / 9)
    with pytest.raises(ConfigError, match="odd"):
        PoolMixer(4)


def test_poolformer_block_equals_the_formula():
    torch.manual_seed(0)
    blk = PoolFormerBlock(4, mlp_ratio=2.0, layer_scale_init=0.5)
    with torch.no_grad():
        blk.scale1.weight.copy_(torch.tensor([0.5, -1.0, 2.0, 0.1]))
        blk.norm1.weight.uniform_(0.5, 1.5)
        blk.norm2.bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 4, 5, 6)

    def group_norm_1(t, gn):  # one group: statistics over C, H, W of each sample, then per-channel affine
        mu = t.mean((1, 2, 3), keepdim=True)
        var = t.var((1, 2, 3), unbiased=False, keepdim=True)
        return (t - mu) / torch.sqrt(var + gn.eps) * gn.weight.view(1, -1, 1, 1) + gn.bias.view(1, -1, 1, 1)

    def mlp(t):
        h = torch.einsum("oc,nchw->nohw", blk.mlp.fc1.weight[:, :, 0, 0], t) + blk.mlp.fc1.bias.view(1, -1, 1, 1)
        h = torch.nn.functional.gelu(h)
        return torch.einsum("oc,nchw->nohw", blk.mlp.fc2.weight[:, :, 0, 0], h) + blk.mlp.fc2.bias.view(1, -1, 1, 1)

    s1, s2 = blk.scale1.weight.view(1, -1, 1, 1), blk.scale2.weight.view(1, -1, 1, 1)
    y = x + s1 * _pool_minus_identity_by_hand(group_norm_1(x, blk.norm1), 3)
    ref = y + s2 * mlp(group_norm_1(y, blk.norm2))
    torch.testing.assert_close(blk(x), ref, atol=1e-5, rtol=1e-5)
    assert blk.mlp.fc1.out_channels == 8
    assert isinstance(PoolFormerBlock(4, layer_scale_init=None).scale1, torch.nn.Identity)


def test_layer_scale_and_patch_embed_shapes():
    ls = LayerScale2d(3, 1e-5)
    assert torch.equal(ls.weight, torch.full((3,), 1e-5))
    assert PatchEmbed(3, 8, 7, 4, 2)(torch.randn(1, 3, 224, 224)).shape == (1, 8, 56, 56)
    assert PatchEmbed(8, 16, 3, 2, 1)(torch.randn(1, 8, 7, 7)).shape == (1, 16, 4, 4)
