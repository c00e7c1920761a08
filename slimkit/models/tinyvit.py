"""TinyViT (Wu et al., "TinyViT: Fast Pretraining Distillation for Small Vision Transformers", ECCV 2022,
arXiv 2207.10666).

A two-conv stem (3x3 stride 2 twice, GELU between), a stage of MBConv blocks, then three stages that each start with
patch merging (stride 2) and stack TinyViT blocks (windowed attention with attention biases, a local 3x3 depthwise
conv, MLP ratio 4); global average, LayerNorm and a linear head. At 224x224 the stages see 56, 28, 14 and 7 pixels
with windows 7, 7, 14, 7 (the last two stages attend globally). Variants differ in widths and heads and are data.

The paper trains TinyViT by distillation from a stored teacher: `slimkit distill --student tinyvit_5m --method
stored --store ...` (sparse top-k logits, `slimkit.distill.store`).

`small_input=True` (28x28 / 32x32 images) makes the stem's first conv stride 1 (total stride 16) and, unless
`window_sizes` is given, uses windows 7, 7, 4, 2, so on 28x28 the attention stages (7x7, 4x4, 2x2) attend globally
without padding. A map that is not a whole number of windows is zero-padded (the paper's code does the same).

At 224x224 / 1000 classes (MACs = convs + linears + attention matmuls): 5M 5.39M params 1.26G MACs, 11M 11.00M /
2.02G, 21M 21.20M / 4.25G (the paper: 5.4M / 1.3G, 11M / 2.0G, 21M / 4.3G).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.layers.tinyvit import ConvBN, MBConv, PatchMerging, TinyViTBlock
from slimkit.models._base import ClassifierMixin, init_vit_weights
from slimkit.registry import MODELS

__all__ = ["TinyViT", "build_tinyvit"]

WINDOWS = (7, 7, 14, 7)  # the paper's windows at 224x224
WINDOWS_SMALL = (7, 7, 4, 2)  # small_input: whole-map windows at 28x28


class TinyViT(ClassifierMixin, nn.Module):
    def __init__(self, embed_dims: Sequence[int] = (64, 128, 160, 320), depths: Sequence[int] = (2, 2, 6, 2),
                 num_heads: Sequence[int] = (2, 4, 5, 10), window_sizes: Sequence[int] | None = None,
                 mlp_ratio: float = 4.0, mbconv_expand_ratio: float = 4.0, local_conv_size: int = 3,
                 num_classes: int = 10, in_chans: int = 3, small_input: bool = False, drop_rate: float = 0.0,
                 act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        windows = tuple(window_sizes) if window_sizes is not None else (WINDOWS_SMALL if small_input else WINDOWS)
        n = len(embed_dims)
        if n < 2 or not len(depths) == len(num_heads) == len(windows) == n:
            raise ConfigError(f"TinyViT: embed_dims {tuple(embed_dims)}, depths {tuple(depths)}, num_heads "
                              f"{tuple(num_heads)} and window_sizes {windows} need one entry per stage (>= 2 stages: "
                              "the first is convolutional)")
        self.num_features = embed_dims[-1]
        self.num_classes = num_classes
        d0 = embed_dims[0]
        self.patch_embed = nn.Sequential(OrderedDict(conv1=ConvBN(in_chans, d0 // 2, 3, 1 if small_input else 2),
                                                     act=act_layer(), conv2=ConvBN(d0 // 2, d0, 3, 2)))
        stages: list[nn.Module] = [nn.Sequential(OrderedDict(blocks=nn.Sequential(
            *[MBConv(d0, mbconv_expand_ratio, act_layer) for _ in range(depths[0])])))]
        for i in range(1, n):
            blocks = nn.Sequential(*[TinyViTBlock(embed_dims[i], num_heads[i], windows[i], mlp_ratio, drop_rate,
                                                  local_conv_size, act_layer) for _ in range(depths[i])])
            merge = PatchMerging(embed_dims[i - 1], embed_dims[i], act_layer)
            stages.append(nn.Sequential(OrderedDict(downsample=merge, blocks=blocks)))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.LayerNorm(embed_dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[-1], num_classes)
        init_vit_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images -> N x C x H x W map of the last stage (stride 32; 16 with small_input)."""
        return self.stages(self.patch_embed(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.norm(x.mean((2, 3)))
        return x if pre_logits else self.head(self.head_drop(x))


_CFGS: dict[str, dict[str, Any]] = {
    "tinyvit_5m": {"embed_dims": (64, 128, 160, 320), "num_heads": (2, 4, 5, 10)},
    "tinyvit_11m": {"embed_dims": (64, 128, 256, 448), "num_heads": (2, 4, 8, 14)},
    "tinyvit_21m": {"embed_dims": (96, 192, 384, 576), "num_heads": (3, 6, 12, 18)},
}


def build_tinyvit(variant: str = "tinyvit_5m", **kwargs: Any) -> TinyViT:
    """Build a registered variant; keyword arguments (window_sizes, small_input, num_classes, ...) override."""
    return TinyViT(**{**_CFGS[variant], **kwargs})


for _name in _CFGS:
    MODELS.register(_name, input_size=(3, 224, 224), family="tinyvit", paper="arXiv:2207.10666", small_input=True)(
        lambda _n=_name, **kw: build_tinyvit(_n, **kw)
    )
