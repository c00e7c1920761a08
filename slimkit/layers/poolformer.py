"""PoolFormer blocks (Yu et al., "MetaFormer Is Actually What You Need for Vision", CVPR 2022, arXiv 2111.11418).

MetaFormer block with pooling as the token mixer, on N x C x H x W maps:
    x = x + s1 * (pool(GN(x)) - GN(x)),   pool = 3x3 average, stride 1, averaging valid pixels only
    x = x + s2 * mlp(GN(x)),              mlp = 1x1 conv -> GELU -> 1x1 conv
GN is GroupNorm with one group (LayerNorm over C, H, W with per-channel affine); s1, s2 are learnable per-channel
layer scales (initialised small). Subtracting the input makes the mixer a pure neighbourhood term, since the
block already adds the identity through its residual.
"""

from __future__ import annotations

import torch
from torch import nn

from slimkit.errors import ConfigError

__all__ = ["ConvMlp", "LayerScale2d", "PatchEmbed", "PoolFormerBlock", "PoolMixer"]


class PoolMixer(nn.Module):
    """avgpool_k(x) - x; the average counts only pixels inside the image (count_include_pad=False)."""

    def __init__(self, pool_size: int = 3) -> None:
        super().__init__()
        if pool_size < 1 or pool_size % 2 == 0:
            raise ConfigError(f"PoolMixer: pool_size must be odd and positive (keeps the size), got {pool_size}")
        self.pool = nn.AvgPool2d(pool_size, stride=1, padding=pool_size // 2, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(x) - x


class ConvMlp(nn.Module):
    """Channel MLP as two 1x1 convolutions."""

    def __init__(self, dim: int, hidden: int, act_layer: type[nn.Module] = nn.GELU, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = act_layer()
        self.fc2 = nn.Conv2d(hidden, dim, 1)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class LayerScale2d(nn.Module):
    """Per-channel learnable scale of an N x C x H x W map (weight has C entries)."""

    def __init__(self, dim: int, init_value: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight.view(1, -1, 1, 1)


class PoolFormerBlock(nn.Module):
    def __init__(self, dim: int, pool_size: int = 3, mlp_ratio: float = 4.0, act_layer: type[nn.Module] = nn.GELU,
                 drop: float = 0.0, layer_scale_init: float | None = 1e-5) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(1, dim)
        self.mixer = PoolMixer(pool_size)
        self.norm2 = nn.GroupNorm(1, dim)
        self.mlp = ConvMlp(dim, int(dim * mlp_ratio), act_layer, drop)
        use_ls = layer_scale_init is not None
        self.scale1 = LayerScale2d(dim, layer_scale_init) if use_ls else nn.Identity()
        self.scale2 = LayerScale2d(dim, layer_scale_init) if use_ls else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.scale1(self.mixer(self.norm1(x)))
        return x + self.scale2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """Patch embedding / downsampling as one strided convolution (overlapping when padding > 0)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int = 16, stride: int = 16,
                 padding: int = 0) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride, padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)
