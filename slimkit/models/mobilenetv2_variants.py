"""MobileNetV2 with the seed papers' drop-in upgrades, each built by the MobileNetV2 builder's hooks (no copied
class). MACs are counted, not assumed; the papers' ImageNet figures for width 1.0 at 224x224 are:

* Coordinate Attention (Hou et al., CVPR 2021, arXiv:2103.02907) after every depthwise conv: +2.0 top-1 at about
  310M MAdds (vs 300M).
* DY-ReLU-B (Chen et al., ECCV 2020, arXiv:2003.10027) for the two activations of every inverted residual block
  (K = 2 pieces, reduction 4): 72.0 -> 76.2 top-1 for about 5% more FLOPs.
* Dynamic Convolution (Chen et al., CVPR 2020, arXiv:1912.03458) in every conv of the inverted residual blocks
  (K = 4 kernels, attention reduction 4, temperature annealed 30 -> 1; the stem and the last 1x1 conv stay static,
  which is what gives the paper's 11.1M parameters): 72.0 -> 75.2 top-1 at about 313M MAdds.
"""

from __future__ import annotations

import functools
from typing import Any

from slimkit.layers import CoordinateAttention, DynamicConv2d, DynamicReLU
from slimkit.models.mobilenetv2 import MobileNetV2, build_mobilenetv2
from slimkit.registry import MODELS

__all__ = ["build_mobilenetv2_ca", "build_mobilenetv2_dyrelu", "build_mobilenetv2_dyconv"]


def build_mobilenetv2_ca(variant: str = "mobilenetv2_100", **kwargs: Any) -> MobileNetV2:
    return build_mobilenetv2(variant, attn_layer=lambda c: CoordinateAttention(c, reduction=32), **kwargs)


def build_mobilenetv2_dyrelu(variant: str = "mobilenetv2_100", mode: str = "B", **kwargs: Any) -> MobileNetV2:
    act = functools.partial(DynamicReLU, mode=mode, k=2, reduction=4)
    act.per_channel = True  # type: ignore[attr-defined]  # built as act(channels)
    return build_mobilenetv2(variant, block_act_layer=act, **kwargs)


def build_mobilenetv2_dyconv(variant: str = "mobilenetv2_100", num_kernels: int = 4, **kwargs: Any) -> MobileNetV2:
    conv = functools.partial(DynamicConv2d, num_kernels=num_kernels, reduction=4)
    return build_mobilenetv2(variant, conv_layer=conv, **kwargs)


_VARIANTS = {
    "ca": (build_mobilenetv2_ca, "arXiv:2103.02907"),
    "dyrelu": (build_mobilenetv2_dyrelu, "arXiv:2003.10027"),
    "dyconv": (build_mobilenetv2_dyconv, "arXiv:1912.03458"),
}

for _width in ("050", "100"):
    for _kind, (_build, _paper) in _VARIANTS.items():
        MODELS.register(f"mobilenetv2_{_width}_{_kind}", input_size=(3, 224, 224), family="mobilenetv2",
                        paper=_paper, small_input=True)(
            lambda _w=_width, _b=_build, **kw: _b(f"mobilenetv2_{_w}", **kw))
