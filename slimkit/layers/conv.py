"""The MobileNet family's units: `conv_bn` (conv -> BN -> optional activation) and the inverted residual block.

One definition serves the models (MobileNetV2 and its variants, MobileNetV3), the blocks in this package (sandglass,
Mobile-Former) and the mobilenet search space, so a fix or a fused-deploy rule written for one holds for all.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["InvertedResidual", "conv_bn"]


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1,
            act: Callable[..., nn.Module] | None = None, conv: Callable[..., nn.Module] = nn.Conv2d) -> nn.Sequential:
    """conv (no bias, "same" padding) -> BN -> optional activation."""
    layers: list[nn.Module] = [conv(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(_act(act, cout))
    return nn.Sequential(*layers)


def _act(act: Callable[..., nn.Module], channels: int) -> nn.Module:
    """`act()` for plain activations; `act(channels)` for those with per-channel parameters (DY-ReLU), which say so
    by a `per_channel` attribute on the factory."""
    return act(channels) if getattr(act, "per_channel", False) else act()


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand (skipped when there is nothing to expand) -> k x k depthwise -> optional
    attention -> linear 1x1 project, with a shortcut when the shape is kept. The width inside is `hidden`, or
    round(cin * expand)."""

    def __init__(self, cin: int, cout: int, stride: int, expand: float, act_layer: Callable[..., nn.Module],
                 attn_layer: Callable[[int], nn.Module] | None = None,
                 conv_layer: Callable[..., nn.Module] = nn.Conv2d, *, kernel: int = 3, hidden: int | None = None
                 ) -> None:
        super().__init__()
        hidden = int(round(cin * expand)) if hidden is None else hidden
        self.use_res = stride == 1 and cin == cout
        self.expand = conv_bn(cin, hidden, 1, 1, 1, act_layer, conv_layer) if hidden != cin else nn.Identity()
        self.dw = conv_bn(hidden, hidden, kernel, stride, hidden, act_layer, conv_layer)
        self.attn = attn_layer(hidden) if attn_layer is not None else nn.Identity()
        self.project = conv_bn(hidden, cout, 1, 1, 1, None, conv_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.attn(self.dw(self.expand(x))))
        return x + out if self.use_res else out
