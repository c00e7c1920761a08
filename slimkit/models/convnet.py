"""A small plain ConvNet (conv-BN-ReLU x3 with pooling, then a linear head): fast tests and quick baselines."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.models._base import ClassifierMixin
from slimkit.registry import MODELS

__all__ = ["ConvNet"]


class ConvNet(ClassifierMixin, nn.Module):
    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, ...] = (16, 32, 64),
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            cin = w
        self.features = nn.Sequential(*layers)
        self.num_classes, self.num_features = num_classes, cin
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


_CFGS: dict[str, dict[str, Any]] = {"convnet_small": {"widths": (16, 32, 64)}, "convnet_tiny": {"widths": (8, 16)}}

for _name, _cfg in _CFGS.items():
    MODELS.register(_name, input_size=(3, 32, 32), family="convnet", small_input=True)(
        lambda _cfg=_cfg, **kw: ConvNet(**{**_cfg, **kw})
    )
