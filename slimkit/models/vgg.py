"""CIFAR-style VGG with BatchNorm (Simonyan & Zisserman 2015, as used on CIFAR by pruning papers).

Conv stacks from the paper's configurations A (VGG-11) and D (VGG-16); max-pool (ceil mode) after every stage, so a
feature map that has reached 1x1 stays 1x1 and small inputs work; one linear classifier.
VGG-16: 14.7M params, 313M MACs at 32x32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.models._base import ClassifierMixin
from slimkit.registry import MODELS

__all__ = ["VGG"]


class VGG(ClassifierMixin, nn.Module):
    def __init__(self, stages: tuple[tuple[int, ...], ...], num_classes: int = 10, in_chans: int = 3,
                 drop_rate: float = 0.0) -> None:
        super().__init__()
        blocks, cin = [], in_chans
        for widths in stages:
            layers: list[nn.Module] = []
            for w in widths:
                layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                cin = w
            blocks.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)  # a 1x1 map stays 1x1: small inputs work
        self.num_classes, self.num_features = num_classes, cin
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = self.pool(stage(x))
        return x


_CFGS: dict[str, dict[str, Any]] = {
    "vgg11": {"stages": ((64,), (128,), (256, 256), (512, 512), (512, 512))},
    "vgg16": {"stages": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))},
}

for _name, _cfg in _CFGS.items():
    MODELS.register(_name, input_size=(3, 32, 32), family="vgg", paper="arXiv:1409.1556", small_input=True)(
        lambda _cfg=_cfg, **kw: VGG(**{**_cfg, **kw})
    )
