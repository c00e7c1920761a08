"""MobileNetV2 with a Coordinate Attention block after every depthwise convolution (Hou et al., CVPR 2021),
built by the MobileNetV2 builder's `attn_layer` hook (no copied class). The paper reports +2.0 top-1 on ImageNet
for a few extra MAdds (~310M vs 300M); here the MACs are counted, not assumed."""

from __future__ import annotations

from typing import Any

from slimkit.layers import CoordinateAttention
from slimkit.models.mobilenetv2 import MobileNetV2, build_mobilenetv2
from slimkit.registry import MODELS

__all__ = ["build_mobilenetv2_ca"]


def build_mobilenetv2_ca(variant: str = "mobilenetv2_100", **kwargs: Any) -> MobileNetV2:
    return build_mobilenetv2(variant, attn_layer=lambda c: CoordinateAttention(c, reduction=32), **kwargs)


for _width in ("050", "100"):
    MODELS.register(f"mobilenetv2_{_width}_ca", input_size=(3, 224, 224), family="mobilenetv2",
                    paper="arXiv:2103.02907")(lambda _w=_width, **kw: build_mobilenetv2_ca(f"mobilenetv2_{_w}", **kw))
