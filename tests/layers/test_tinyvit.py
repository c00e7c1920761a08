import pytest
import torch
import torch.nn.functional as F

from slimkit.errors import ConfigError
from slimkit.layers.tinyvit import (
    MBConv,
    TinyViTBlock,
    WindowAttention,
    attention_bias_index,
    window_partition,
    window_reverse,
)


def test_attention_bias_index_by_hand():
    # 2 x 2 window, tokens (0,0) (0,1) (1,0) (1,1): offset (|dy|, |dx|) -> |dy| * 2 + |dx|
    assert attention_bias_index(2).tolist() == [[0, 1, 2, 3], [1, 0, 3, 2], [2, 3, 0, 1], [3, 2, 1, 0]]
    idx = attention_bias_index(7)
    assert idx.shape == (49, 49) and idx.max() == 48 and torch.equal(idx, idx.T)


def test_window_partition_order_and_inverse():
    x = torch.randn(2, 6, 9, 5)
    w = window_partition(x, 3)
    assert w.shape == (2 * 2 * 3, 9, 5)
    torch.testing.assert_close(w[1], x[0, 0:3, 3:6].reshape(9, 5))  # second window of the first image: row 0, col 1
    torch.testing.assert_close(w[6 + 3], x[1, 3:6, 0:3].reshape(9, 5))
    torch.testing.assert_close(window_reverse(w, 3, 2, 6, 9), x)


def test_window_attention_adds_its_bias_per_head():
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, 2).eval()
    with torch.no_grad():
        attn.attention_biases.normal_()
    x = torch.randn(3, 4, 8)
    q, k, v = attn.qkv(x).reshape(3, 4, 3, 2, 4).permute(2, 0, 3, 1, 4)
    bias = torch.stack([attn.attention_biases[h][attention_bias_index(2)] for h in range(2)])
    weights = torch.softmax(q @ k.transpose(-2, -1) / 2.0 + bias, -1)  # head_dim 4: scale 1/2
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(3, 4, 8))
    with torch.no_grad():
        torch.testing.assert_close(attn(x), expected)


def test_mbconv_starts_as_gelu_of_its_input():
    x = torch.randn(2, 8, 5, 5)
    block = MBConv(8).eval()  # the projection's BatchNorm scale starts at zero
    with torch.no_grad():
        torch.testing.assert_close(block(x), F.gelu(x))


def test_block_pads_to_whole_windows_and_keeps_the_shape():
    torch.manual_seed(0)
    block = TinyViTBlock(16, 2, window_size=4).eval()
    for hw in ((8, 8), (5, 7), (1, 1)):
        x = torch.randn(2, 16, *hw)
        assert block(x).shape == x.shape
    # windows are independent: changing the right half of an 8 x 8 map (window 4) leaves the left half's attention
    # alone, and only the local 3x3 conv lets the left border column see it
    x = torch.randn(1, 16, 8, 8)
    y = x.clone()
    y[..., 4:] = torch.randn(1, 16, 8, 4)
    with torch.no_grad():
        torch.testing.assert_close(block(x)[..., :3], block(y)[..., :3])
        assert not torch.allclose(block(x)[..., 3], block(y)[..., 3])


def test_bad_heads_raise():
    with pytest.raises(ConfigError, match="divisible"):
        TinyViTBlock(10, 3)
