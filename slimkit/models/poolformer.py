"""PoolFormer (Yu et al., "MetaFormer Is Actually What You Need for Vision", CVPR 2022, arXiv 2111.11418).

Four stages of PoolFormer blocks (pooling token mixer, 1x1-conv MLP, GroupNorm(1), layer scale) at strides
4, 8, 16, 32; a 7x7 stride-4 patch embedding and 3x3 stride-2 embeddings between stages; GroupNorm, global
average and a linear head. Variants are (layers, dims, layer-scale init) data. `small_input=True` makes the stem a
3x3 stride-1 embedding (total stride 8: 28x28 -> 4x4 in the last stage).

At 224x224 / 1000 classes: S12 11.9M params 1.8G MACs (the paper's Table 2), S24 21.4M / 3.4G, S36 30.9M / 5.0G.
(M36 / M48 are layers (6, 6, 18, 6) / (8, 8, 24, 8), dims (96, 192, 384, 768), layer scale 1e-6: 56.2M / 8.8G and
73.5M / 11.6G; not registered, to keep the registry-wide tests light: pass layers / dims to `PoolFormer`.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.layers.poolformer import PatchEmbed, PoolFormerBlock
from slimkit.models._base import ClassifierMixin, init_vit_weights
from slimkit.registry import MODELS

__all__ = ["PoolFormer", "build_poolformer"]


class PoolFormer(ClassifierMixin, nn.Module):
    def __init__(self, layers: Sequence[int] = (2, 2, 6, 2), dims: Sequence[int] = (64, 128, 320, 512),
                 mlp_ratio: float = 4.0, pool_size: int = 3, layer_scale_init: float | None = 1e-5,
                 num_classes: int = 10, in_chans: int = 3, small_input: bool = False, drop_rate: float = 0.0,
                 act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        if len(layers) != len(dims) or not layers:
            raise ConfigError(f"PoolFormer: layers {tuple(layers)} and dims {tuple(dims)} need the same, non-zero "
                              "length (one entry per stage)")
        self.num_features = dims[-1]
        self.num_classes = num_classes
        stem = (3, 1, 1) if small_input else (7, 4, 2)
        stages: list[nn.Module] = [PatchEmbed(in_chans, dims[0], *stem)]
        for i, (n, dim) in enumerate(zip(layers, dims, strict=True)):
            if i > 0:
                stages.append(PatchEmbed(dims[i - 1], dim, 3, 2, 1))
            stages.append(nn.Sequential(*[PoolFormerBlock(dim, pool_size, mlp_ratio, act_layer, drop_rate,
                                                          layer_scale_init) for _ in range(n)]))
        self.features = nn.Sequential(*stages)
        self.norm = nn.GroupNorm(1, dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes)
        init_vit_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.features(x))


_CFGS: dict[str, dict[str, Any]] = {
    "poolformer_s12": {"layers": (2, 2, 6, 2), "dims": (64, 128, 320, 512)},
    "poolformer_s24": {"layers": (4, 4, 12, 4), "dims": (64, 128, 320, 512)},
    "poolformer_s36": {"layers": (6, 6, 18, 6), "dims": (64, 128, 320, 512), "layer_scale_init": 1e-6},
}


def build_poolformer(variant: str = "poolformer_s12", **kwargs: Any) -> PoolFormer:
    """Build a registered variant; keyword arguments (layers, dims, small_input, num_classes, ...) override."""
    return PoolFormer(**{**_CFGS[variant], **kwargs})


for _name in _CFGS:
    MODELS.register(_name, input_size=(3, 224, 224), family="poolformer", paper="arXiv:2111.11418",
                    small_input=True)(lambda _n=_name, **kw: build_poolformer(_n, **kw))
