"""TinyViT blocks (Wu et al., "TinyViT: Fast Pretraining Distillation for Small Vision Transformers", ECCV 2022,
arXiv 2207.10666).

- `ConvBN`: conv (no bias) + BatchNorm, an `nn.Sequential` so `fuse_model` folds it.
- `MBConv`: 1x1 expansion + BN + GELU, 3x3 depthwise + BN + GELU, 1x1 projection + BN whose scale starts at 0 (the
  block starts as GELU(x)), residual add, GELU.
- `PatchMerging`: 1x1 conv + BN + GELU, 3x3 depthwise stride 2 + BN + GELU, 1x1 conv + BN: halves H and W.
- `WindowAttention`: multi-head self-attention inside a window of ws x ws tokens, plus a learned bias per head and
  per offset (|dy|, |dx|) between two tokens of the window (LeViT's attention biases: `attention_biases` holds
  heads x ws*ws values, gathered into an N x N table per head by the buffer `attention_bias_idxs`).
- `TinyViTBlock`: on an N x C x H x W map, x + attn(LN(windows of x)) (zero-padded to whole windows, the LayerNorm
  applied after padding, as in the paper's code), then a 3x3 depthwise conv + BN between attention and MLP (no
  residual around it), then x + mlp(LN(x)) per token.

Every shape is read from the input at run time and no Python branch depends on it, so the blocks trace with torch.fx
(the padding is always applied; it is empty when the map is a whole number of windows).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.errors import ConfigError
from slimkit.layers.tokens import Attention, Mlp

__all__ = ["ConvBN", "MBConv", "PatchMerging", "TinyViTBlock", "WindowAttention", "attention_bias_index",
           "window_partition", "window_reverse"]


class ConvBN(nn.Sequential):
    """Conv2d without bias, then BatchNorm2d (its scale initialised to `bn_weight_init`)."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1,
                 bn_weight_init: float = 1.0) -> None:
        super().__init__(OrderedDict(conv=nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                                     bn=nn.BatchNorm2d(cout)))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.zeros_(self.bn.bias)


class MBConv(nn.Module):
    """Inverted residual without squeeze-excite: GELU(x + BN(pw(GELU(BN(dw(GELU(BN(pw(x))))))))."""

    def __init__(self, dim: int, expand_ratio: float = 4.0, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        hidden = int(dim * expand_ratio)
        self.conv1 = ConvBN(dim, hidden)
        self.act1 = act_layer()
        self.conv2 = ConvBN(hidden, hidden, 3, groups=hidden)
        self.act2 = act_layer()
        self.conv3 = ConvBN(hidden, dim, bn_weight_init=0.0)
        self.act3 = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.act3(x + y)


class PatchMerging(nn.Sequential):
    """1x1 conv to `out_dim`, 3x3 depthwise stride-2 conv, 1x1 conv (each + BN; GELU between)."""

    def __init__(self, dim: int, out_dim: int, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__(OrderedDict(conv1=ConvBN(dim, out_dim), act1=act_layer(),
                                     conv2=ConvBN(out_dim, out_dim, 3, 2, groups=out_dim), act2=act_layer(),
                                     conv3=ConvBN(out_dim, out_dim)))


def attention_bias_index(window_size: int) -> torch.Tensor:
    """N x N (N = ws^2) index of the offset (|dy|, |dx|) = |dy| * ws + |dx| between tokens i and j of a window."""
    r = torch.arange(window_size)
    y, x = torch.meshgrid(r, r, indexing="ij")
    y, x = y.flatten(), x.flatten()
    return (y[:, None] - y[None, :]).abs() * window_size + (x[:, None] - x[None, :]).abs()


class WindowAttention(Attention):
    """Multi-head attention over the N = ws^2 tokens of each window, with per-head attention biases.

    Same layout as `slimkit.layers.tokens.Attention` (qkv: q | k | v, each heads x head_dim; `num_heads`,
    `head_dim`, `scale`, `qkv`, `proj`), plus `attention_biases` (heads x ws^2 offsets).
    """

    def __init__(self, dim: int, num_heads: int, window_size: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0) -> None:
        super().__init__(dim, num_heads, qkv_bias, attn_drop, proj_drop)
        if window_size < 1:
            raise ConfigError(f"WindowAttention: window_size must be >= 1, got {window_size}")
        self.window_size = window_size
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, window_size * window_size))
        self.register_buffer("attention_bias_idxs", attention_bias_index(window_size), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.attention_biases[:, self.attention_bias_idxs]
        attn = self.attn_drop(attn.softmax(-1))
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1)))


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """B x H x W x C (H, W multiples of ws) -> (B * H/ws * W/ws) x ws^2 x C, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // ws, ws, w // ws, ws, c).transpose(2, 3)
    return x.reshape(b * (h // ws) * (w // ws), ws * ws, c)


def window_reverse(x: torch.Tensor, ws: int, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of `window_partition`: (B * H/ws * W/ws) x ws^2 x C -> B x H x W x C."""
    c = x.shape[-1]
    return x.reshape(b, h // ws, w // ws, ws, ws, c).transpose(2, 3).reshape(b, h, w, c)


class TinyViTBlock(nn.Module):
    """Windowed attention, local depthwise conv, MLP; N x C x H x W in and out."""

    def __init__(self, dim: int, num_heads: int, window_size: int = 7, mlp_ratio: float = 4.0, drop: float = 0.0,
                 local_conv_size: int = 3, act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        if dim % num_heads:
            raise ConfigError(f"TinyViTBlock: dim {dim} is not divisible by num_heads {num_heads}; pick a divisor")
        self.window_size = window_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, num_heads, window_size, proj_drop=drop)
        self.local_conv = ConvBN(dim, dim, local_conv_size, groups=dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        ws = self.window_size
        pad_b, pad_r = (ws - h % ws) % ws, (ws - w % ws) % ws
        t = F.pad(x.permute(0, 2, 3, 1), (0, 0, 0, pad_r, 0, pad_b))  # B x H' x W' x C, zeros below and right
        t = self.attn(self.norm1(window_partition(t, ws)))
        t = window_reverse(t, ws, b, h + pad_b, w + pad_r)[:, :h, :w]
        x = self.local_conv(x + t.permute(0, 3, 1, 2))
        t = x.flatten(2).transpose(1, 2)  # B x HW x C
        t = t + self.mlp(self.norm2(t))
        return t.transpose(1, 2).reshape(b, c, h, w)
