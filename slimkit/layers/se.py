"""Squeeze-and-Excitation as MobileNetV3 uses it (Howard et al., "Searching for MobileNetV3", ICCV 2019).

Global average pool, a 1x1 conv reducing to `channels / reduction` (rounded to a multiple of `divisor`), an
activation (ReLU), a 1x1 conv back to `channels` and a gate (hard-sigmoid) that multiplies the input channel-wise.
Both convs carry a bias and no BN. The gating is `x * gate`, which the pruning engine couples with `x`'s channels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from slimkit.layers.channels import make_divisible

__all__ = ["SqueezeExcite"]


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: float = 4, divisor: int = 8,
                 gate: Callable[[], nn.Module] = nn.Hardsigmoid, act: Callable[[], nn.Module] = nn.ReLU) -> None:
        super().__init__()
        hidden = make_divisible(channels / reduction, divisor)
        self.conv_reduce = nn.Conv2d(channels, hidden, 1, bias=True)
        self.act = act()
        self.conv_expand = nn.Conv2d(hidden, channels, 1, bias=True)
        self.gate = gate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.conv_expand(self.act(self.conv_reduce(s))))
