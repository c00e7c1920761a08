"""MobileNeXt (Zhou et al., "Rethinking Bottleneck Structure for Efficient Mobile Network Design", ECCV 2020).

A stack of sandglass blocks (slimkit.layers.sandglass) following the paper's Table 3: a 3x3 stem, seven sandglass
stages and a global pool + linear classifier (the paper's final 1x1 conv on the pooled 1x1 map). Width variants are
data. Blocks whose channel count changes have no shortcut; they also drop the first depthwise conv (its work sits
on the narrower input and feeds no shortcut). The first block (stem 32 -> 96) keeps it, with reduction 2, as in the
paper's table. `small_input=True` keeps the stem and the first sandglass stage at stride 1 (total stride 8) for
28x28 / 32x32 images. Width 1.0 at 224x224 counts 3.57M params and 311M conv/linear MACs (paper: 3.5M, 300M).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.layers.sandglass import SandglassBlock
from slimkit.models._base import ClassifierMixin, init_mobile_weights
from slimkit.models.mobilenetv2 import make_divisible
from slimkit.registry import MODELS

__all__ = ["MobileNeXt", "build_mobilenext"]

# reduction t, output channels c, repeats n, first stride s (the paper's Table 3)
_STAGES = ((2, 96, 1, 2), (6, 144, 1, 1), (6, 192, 3, 2), (6, 288, 3, 2), (6, 384, 4, 1), (6, 576, 4, 2),
           (6, 960, 3, 1), (6, 1280, 1, 1))


class MobileNeXt(ClassifierMixin, nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 10, in_chans: int = 3, small_input: bool = False,
                 identity_multiplier: float = 1.0, act_layer: Callable[..., nn.Module] = nn.ReLU6,
                 stages: tuple[tuple[int, int, int, int], ...] = _STAGES, drop_rate: float = 0.2) -> None:
        super().__init__()
        if width <= 0:
            raise ConfigError(f"MobileNeXt width multiplier must be > 0, got {width}")
        cin = make_divisible(32 * width)
        self.num_classes = num_classes
        self.head_drop = nn.Dropout(drop_rate)
        layers: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_chans, cin, 3, 1 if small_input else 2, 1, bias=False),
                                                 nn.BatchNorm2d(cin), act_layer())]
        for i, (t, c, n, s) in enumerate(stages):
            last = i == len(stages) - 1
            cout = make_divisible(c * max(1.0, width)) if last else make_divisible(c * width)
            for j in range(n):
                stride = (1 if small_input and i == 0 else s) if j == 0 else 1
                first_dw = cin == cout or i == 0
                layers.append(SandglassBlock(cin, cout, stride, t, identity_multiplier=identity_multiplier,
                                             first_dw=first_dw, act_layer=act_layer))
                cin = cout
        self.features = nn.Sequential(*layers)
        self.num_features = cin
        self.head = nn.Linear(cin, num_classes)
        init_mobile_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


_CFGS: dict[str, dict[str, Any]] = {
    "mobilenext_035": {"width": 0.35},
    "mobilenext_050": {"width": 0.5},
    "mobilenext_075": {"width": 0.75},
    "mobilenext_100": {"width": 1.0},
    "mobilenext_140": {"width": 1.4},
}


def build_mobilenext(variant: str = "mobilenext_100", **kwargs: Any) -> MobileNeXt:
    """Build a registered width variant; keyword arguments (act_layer, identity_multiplier, ...) override."""
    return MobileNeXt(**{**_CFGS[variant], **kwargs})


for _name in _CFGS:
    MODELS.register(_name, input_size=(3, 224, 224), family="mobilenext", paper="arXiv:2007.02269",
                    small_input=True)(lambda _n=_name, **kw: build_mobilenext(_n, **kw))
