"""MobileNetV2 (Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018).

Width multiplier variants are data. The activation (`act_layer`; `block_act_layer` for the blocks only), an
optional attention module (`attn_layer(channels)`, inserted after the depthwise conv) and the convs of the inverted
residual blocks (`conv_layer`, called like `nn.Conv2d`) are pluggable, so the DY-ReLU / Dynamic Conv / Coordinate
Attention variants reuse this builder. `small_input=True` keeps the stem and the first downsampling stage at stride 1
(total stride 8) for 28x28 / 32x32 images. Width 1.0 at 224x224: 3.50M params, 300M MACs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimkit.layers.channels import make_divisible
from slimkit.layers.conv import InvertedResidual, conv_bn
from slimkit.models._base import ClassifierMixin, init_mobile_weights
from slimkit.registry import MODELS

__all__ = ["InvertedResidual", "MobileNetV2", "build_mobilenetv2", "conv_bn", "make_divisible"]

# expansion t, output channels c, repeats n, first stride s (the paper's Table 2)
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(ClassifierMixin, nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 10, in_chans: int = 3, small_input: bool = False,
                 act_layer: Callable[..., nn.Module] = nn.ReLU6, attn_layer: Callable[[int], nn.Module] | None = None,
                 conv_layer: Callable[..., nn.Module] = nn.Conv2d,
                 block_act_layer: Callable[..., nn.Module] | None = None, drop_rate: float = 0.2) -> None:
        super().__init__()
        cin = make_divisible(32 * width)
        self.num_features = make_divisible(1280 * max(1.0, width))
        self.num_classes = num_classes
        self.head_drop = nn.Dropout(drop_rate)
        layers: list[nn.Module] = [conv_bn(in_chans, cin, 3, 1 if small_input else 2, 1, act_layer)]
        for i, (t, c, n, s) in enumerate(_SETTINGS):
            cout = make_divisible(c * width)
            stride = 1 if (small_input and i == 1) else s
            for j in range(n):
                layers.append(InvertedResidual(cin, cout, stride if j == 0 else 1, t, block_act_layer or act_layer,
                                               attn_layer, conv_layer))
                cin = cout
        layers.append(conv_bn(cin, self.num_features, 1, 1, 1, act_layer))
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(self.num_features, num_classes)
        init_mobile_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


_CFGS: dict[str, dict[str, Any]] = {
    "mobilenetv2_035": {"width": 0.35},
    "mobilenetv2_050": {"width": 0.5},
    "mobilenetv2_075": {"width": 0.75},
    "mobilenetv2_100": {"width": 1.0},
    "mobilenetv2_140": {"width": 1.4},
}


def build_mobilenetv2(variant: str = "mobilenetv2_100", **kwargs: Any) -> MobileNetV2:
    """Build a registered width variant; keyword arguments (act_layer, attn_layer, small_input, ...) override."""
    return MobileNetV2(**{**_CFGS[variant], **kwargs})


for _name in _CFGS:
    MODELS.register(_name, input_size=(3, 224, 224), family="mobilenetv2", paper="arXiv:1801.04381")(
        lambda _n=_name, **kw: build_mobilenetv2(_n, **kw)
    )
