"""MobileNetV3 (Howard et al., "Searching for MobileNetV3", ICCV 2019, arXiv:1905.02244), Large and Small.

Blocks follow the paper's Table 1 (Large) and Table 2 (Small) row by row: (kernel, expansion size, output channels,
squeeze-excite, activation RE/HS, stride). A width multiplier scales the stem, every output size and the last 1x1
conv (960 / 576) with `make_divisible(c * width)`; the pre-logits layer stays 1280 / 1024 wide. Expansion sizes
keep the table's *ratio* to the block input: `make_divisible(scaled_input * exp / table_input)`, as in the authors'
TF-slim reference (`expand_input(ratio)`) and timm. This equals `exp` at width 1.0; at width 0.75 it is what the
paper's Table 3 measured (Large 0.75: 155M MAdds / 4.0M params, Small 0.75: 44M / 2.0M), while scaling `exp` itself
(`make_divisible(exp * width)`, torchvision's rule) gives 141M / 3.93M and 39M / 2.02M, 9-10% fewer MAdds, because
the early, high-resolution inputs round *up* (16 * 0.75 -> 16, 24 * 0.75 -> 24) while `exp * width` does not.
The first block of each network has expansion size == input size, so it has no expansion conv. Squeeze-excite sits
after the depthwise conv with hidden size `make_divisible(expansion / 4)`, ReLU and a hard-sigmoid gate.

Table 2 also marks SE on Small's last 1x1 conv (576); the authors' released model, timm and torchvision have none
there, and the paper's 2.5M params / 56M MAdds only hold without it (an SE on 576 channels adds 0.17M params), so
none is added. The head is global pool -> Linear(960 -> 1280 / 576 -> 1024, with bias, no BN) -> h-swish -> dropout
-> Linear classifier (the paper's two "conv2d 1x1, NBN" on a 1x1 map); `forward_head(x, pre_logits=True)` returns
the 1280 / 1024-d embedding, which is `num_features`.

`act_layer=None` uses the paper's RE/HS per row; a callable replaces every block activation (the stem, the last conv
and the head keep h-swish); like MobileNetV2's, it is called as `act_layer(channels)` if it has `per_channel = True`.
`attn_layer=None` uses SE where the table marks it; a callable `attn_layer(channels)` replaces SE at those positions.
`small_input=True` runs the stem and the first stride-2 block at stride 1 (total stride 8) for 28x28 / 32x32 images.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from slimkit.layers import SqueezeExcite
from slimkit.layers.channels import make_divisible
from slimkit.layers.conv import InvertedResidual, conv_bn
from slimkit.models._base import ClassifierMixin, init_mobile_weights
from slimkit.registry import MODELS

__all__ = ["MobileNetV3", "build_mobilenetv3"]

# kernel, expansion size, output channels, SE, activation ("RE" / "HS"), stride
_LARGE = (
    (3, 16, 16, False, "RE", 1),
    (3, 64, 24, False, "RE", 2),
    (3, 72, 24, False, "RE", 1),
    (5, 72, 40, True, "RE", 2),
    (5, 120, 40, True, "RE", 1),
    (5, 120, 40, True, "RE", 1),
    (3, 240, 80, False, "HS", 2),
    (3, 200, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 184, 80, False, "HS", 1),
    (3, 480, 112, True, "HS", 1),
    (3, 672, 112, True, "HS", 1),
    (5, 672, 160, True, "HS", 2),
    (5, 960, 160, True, "HS", 1),
    (5, 960, 160, True, "HS", 1),
)
_SMALL = (
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
)
# blocks, last 1x1 conv, pre-logits width
_ARCHS: dict[str, tuple[tuple[tuple[int, int, int, bool, str, int], ...], int, int]] = {
    "large": (_LARGE, 960, 1280),
    "small": (_SMALL, 576, 1024),
}
_ACTS: dict[str, Callable[[], nn.Module]] = {"RE": nn.ReLU, "HS": nn.Hardswish}


class MobileNetV3(ClassifierMixin, nn.Module):
    def __init__(self, arch: str = "large", width: float = 1.0, num_classes: int = 10, in_chans: int = 3,
                 small_input: bool = False, act_layer: Callable[..., nn.Module] | None = None,
                 attn_layer: Callable[[int], nn.Module] | None = None, drop_rate: float = 0.2) -> None:
        super().__init__()
        blocks, last, embed = _ARCHS[arch]
        se = attn_layer if attn_layer is not None else SqueezeExcite
        cin = make_divisible(16 * width)
        layers: list[nn.Module] = [conv_bn(in_chans, cin, 3, 1 if small_input else 2, 1, nn.Hardswish)]
        first_down = True
        table_in = 16  # the row's input width in the table (width 1.0)
        for k, exp, c, use_se, act, s in blocks:
            stride = s
            if s == 2 and first_down:
                first_down = False
                stride = 1 if small_input else s
            cout = make_divisible(c * width)
            hidden = make_divisible(cin * exp / table_in)  # the expansion *ratio* applies to the scaled input
            # bneck: the inverted residual with a k x k depthwise conv and SE after it
            layers.append(InvertedResidual(cin, cout, stride, hidden / cin, act_layer or _ACTS[act],
                                           se if use_se else None, kernel=k, hidden=hidden))
            cin, table_in = cout, c
        layers.append(conv_bn(cin, make_divisible(last * width), 1, 1, 1, nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.num_features = embed
        self.num_classes = num_classes
        self.head_hidden = nn.Linear(make_divisible(last * width), embed)
        self.head_act = nn.Hardswish()
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed, num_classes)
        init_mobile_weights(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_act(self.head_hidden(x.mean((2, 3))))
        return x if pre_logits else self.head(self.head_drop(x))


_CFGS: dict[str, dict[str, Any]] = {
    "mobilenetv3_large_050": {"arch": "large", "width": 0.5},
    "mobilenetv3_large_075": {"arch": "large", "width": 0.75},
    "mobilenetv3_large_100": {"arch": "large", "width": 1.0},
    "mobilenetv3_small_050": {"arch": "small", "width": 0.5},
    "mobilenetv3_small_075": {"arch": "small", "width": 0.75},
    "mobilenetv3_small_100": {"arch": "small", "width": 1.0},
}


def build_mobilenetv3(variant: str = "mobilenetv3_large_100", **kwargs: Any) -> MobileNetV3:
    """Build a registered variant; keyword arguments (act_layer, attn_layer, small_input, ...) override."""
    return MobileNetV3(**{**_CFGS[variant], **kwargs})


for _name in _CFGS:
    MODELS.register(_name, input_size=(3, 224, 224), family="mobilenetv3", paper="arXiv:1905.02244",
                    small_input=True)(lambda _n=_name, **kw: build_mobilenetv3(_n, **kw))
