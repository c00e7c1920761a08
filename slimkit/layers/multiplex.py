"""MiniViT weight multiplexing (Zhang et al., "MiniViT: Compressing Vision Transformers with Weight Multiplexing",
CVPR 2022, arXiv 2204.07154): consecutive transformer layers share one attention and one MLP.

`MultiplexedBlocks` runs `depth` pre-norm layers with the same `attn` and `mlp` modules (one set of tensors) and
what the paper keeps per layer: both LayerNorms, and the weight transformations that make the shared layers differ:

- attention: a linear map across heads of the attention logits (before softmax) and of the attention weights
  (after softmax), each a 1x1 convolution over the head dimension (heads x heads, no bias), per layer;
- MLP (optional, the paper's Mini-Swin): a depthwise k x k convolution over the token grid, after a LayerNorm, added
  to the stream before the MLP; class tokens pass unchanged.

Both start as the identity (the mixers as identity matrices, the depthwise conv at zero), so a multiplexed model
starts exactly equal to the unshared model whose grouped layers hold the same weights; the paper initialises its
mixers near zero instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import fx, nn

from slimkit.errors import ConfigError

__all__ = ["HeadMixer", "MultiplexedAttention", "MultiplexedBlocks", "TokenConv"]


class HeadMixer(nn.Conv2d):
    """heads x heads linear map of an N x heads x T x T attention tensor (a 1x1 conv over heads), identity at init."""

    def __init__(self, num_heads: int) -> None:
        super().__init__(num_heads, num_heads, 1, bias=False)
        with torch.no_grad():
            self.weight.copy_(torch.eye(num_heads).view(num_heads, num_heads, 1, 1))


class MultiplexedAttention(nn.Module):
    """Multi-head self-attention whose `qkv` / `proj` serve `depth` layers; layer i mixes heads with its own
    `mix_logits[i]` (before softmax) and `mix_weights[i]` (after). Layout as `slimkit.layers.tokens.Attention`."""

    def __init__(self, qkv: nn.Linear, proj: nn.Linear, num_heads: int, depth: int, transform: bool = True,
                 scale: float | None = None, attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        dim = qkv.out_features // 3
        if qkv.out_features != 3 * dim or dim % num_heads:
            raise ConfigError(f"MultiplexedAttention: qkv width {qkv.out_features} is not 3 x a multiple of "
                              f"{num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = scale if scale is not None else self.head_dim ** -0.5
        self.qkv, self.proj = qkv, proj
        self.mix_logits = nn.ModuleList(HeadMixer(num_heads) for _ in range(depth)) if transform else None
        self.mix_weights = nn.ModuleList(HeadMixer(num_heads) for _ in range(depth)) if transform else None
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, layer: int = 0) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if self.mix_logits is not None:
            attn = self.mix_logits[layer](attn)
        attn = attn.softmax(-1)
        if self.mix_weights is not None:
            attn = self.mix_weights[layer](attn)
        attn = self.attn_drop(attn)
        return self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1)))


@fx.wrap
def _grid_side(n: int) -> int:
    """Side of the square token grid of n tokens (a leaf for torch.fx: computed at run time)."""
    side = math.isqrt(int(n))
    if side * side != int(n):
        raise ConfigError(f"the MLP transformation needs a square grid of patch tokens, got {int(n)} tokens")
    return side


class TokenConv(nn.Module):
    """x + dwconv(LN(x)) over the square grid of patch tokens (the first `prefix` tokens pass unchanged).
    The conv starts at zero, so the module starts as the identity."""

    def __init__(self, dim: int, kernel_size: int = 3, prefix: int = 1) -> None:
        super().__init__()
        self.prefix = prefix
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        side = _grid_side(n - self.prefix)
        patches = x[:, self.prefix:]
        grid = self.norm(patches).transpose(1, 2).reshape(b, c, side, side)
        return torch.cat([x[:, :self.prefix], patches + self.conv(grid).flatten(2).transpose(1, 2)], dim=1)


class MultiplexedBlocks(nn.Module):
    """`depth` consecutive layers x = x + attn(norm1[i](x), i); [x = mlp_transform[i](x)]; x = x + mlp(norm2[i](x))
    with one shared `attn` and `mlp` and per-layer norms (and transformations)."""

    def __init__(self, attn: MultiplexedAttention, mlp: nn.Module, norms1: Sequence[nn.Module],
                 norms2: Sequence[nn.Module], mlp_transforms: Sequence[nn.Module] | None = None) -> None:
        super().__init__()
        if len(norms1) != len(norms2) or (mlp_transforms is not None and len(mlp_transforms) != len(norms1)):
            raise ConfigError("MultiplexedBlocks: one norm1, norm2 (and MLP transformation) per layer")
        self.depth = len(norms1)
        self.norm1 = nn.ModuleList(norms1)
        self.attn = attn
        self.mlp_transform = nn.ModuleList(mlp_transforms) if mlp_transforms is not None else None
        self.norm2 = nn.ModuleList(norms2)
        self.mlp = mlp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.depth):
            x = x + self.attn(self.norm1[i](x), i)
            if self.mlp_transform is not None:
                x = self.mlp_transform[i](x)
            x = x + self.mlp(self.norm2[i](x))
        return x
