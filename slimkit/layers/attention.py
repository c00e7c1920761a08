"""Coordinate Attention (Hou et al., CVPR 2021): channel attention that keeps position along H and W.

Pool along W (giving a C x H x 1 map) and along H (C x 1 x W), concatenate along the spatial axis, apply one shared
1x1 conv + BN + activation (reducing to C / r channels), split back, and produce two sigmoid gates (C x H x 1 and
C x 1 x W) that multiply the input.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CoordinateAttention"]


class CoordinateAttention(nn.Module):
    def __init__(self, channels: int, reduction: int = 32, min_hidden: int = 8,
                 act_layer: type[nn.Module] = nn.Hardswish) -> None:
        super().__init__()
        hidden = max(min_hidden, channels // reduction)
        self.conv1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act = act_layer()
        self.conv_h = nn.Conv2d(hidden, channels, 1)
        self.conv_w = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pooled_h = x.mean(3, keepdim=True)  # N x C x H x 1
        pooled_w = x.mean(2, keepdim=True).transpose(2, 3)  # N x C x W x 1
        y = self.act(self.bn1(self.conv1(torch.cat([pooled_h, pooled_w], 2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        gate_h = torch.sigmoid(self.conv_h(y_h))  # N x C x H x 1
        gate_w = torch.sigmoid(self.conv_w(y_w.transpose(2, 3)))  # N x C x 1 x W
        return x * gate_h * gate_w
