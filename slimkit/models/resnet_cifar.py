"""CIFAR-style ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Section 4.2).

Three stages of n basic blocks with 16/32/64 channels, depth = 6n + 2. Shortcuts that change shape use a
1x1 convolution + BN projection (option B), the variant pruning papers (and Torch-Pruning's ResNet-56) use.
ResNet-20: 0.27M params, 41M MACs at 32x32; ResNet-56: 0.86M params, 126M MACs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.errors import ModelError
from slimkit.models._base import ClassifierMixin
from slimkit.registry import MODELS

__all__ = ["BasicBlock", "CifarResNet", "build_cifar_resnet"]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(ClassifierMixin, nn.Module):
    def __init__(self, depth: int = 20, num_classes: int = 10, in_chans: int = 3,
                 widths: tuple[int, ...] = (16, 32, 64), drop_rate: float = 0.0) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ModelError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got {depth}: "
                             "pass e.g. depth=20")
        n = (depth - 2) // 6
        self.num_classes, self.num_features = num_classes, widths[-1]
        self.head_drop = nn.Dropout(drop_rate)
        self.stem = nn.Sequential(nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks = [BasicBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


_CFGS: dict[str, dict[str, Any]] = {
    "resnet20": {"depth": 20},
    "resnet32": {"depth": 32},
    "resnet44": {"depth": 44},
    "resnet56": {"depth": 56},
    "resnet110": {"depth": 110},
}


def build_cifar_resnet(variant: str, **kwargs: Any) -> CifarResNet:
    return CifarResNet(**{**_CFGS[variant], **kwargs})


def _register(name: str) -> None:
    MODELS.register(name, input_size=(3, 32, 32), family="resnet_cifar", paper="arXiv:1512.03385", small_input=True)(
        lambda **kw: build_cifar_resnet(name, **kw)
    )


for _name in _CFGS:
    _register(_name)
