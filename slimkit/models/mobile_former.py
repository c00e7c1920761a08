"""Mobile-Former (Chen et al., "Mobile-Former: Bridging MobileNet and Transformer", CVPR 2022).

A MobileNet stem and a bottleneck-lite block, then Mobile-Former blocks: each updates M learnable global tokens from
the feature map (Mobile->Former), runs the Former on them, runs the Mobile sub-block with dynamic ReLUs conditioned
on the first token, and lets the map read the tokens back (Former->Mobile). After a last Mobile->Former and a 1x1
conv, the head concatenates the pooled map with the first token, then FC + BN + h-swish and the classifier.

Variants follow the paper's per-stage tables (and the authors' released configs). `small_input=True` runs the stem
and the first downsampling block at stride 1 (total stride 8) for 28x28 / 32x32 images.
`forward_features` returns the pair (feature map N x C x H x W, tokens N x M x d), which `forward_head` consumes.
At 224x224 / 1000 classes, 294M: 11.42M params, 286.7M conv/linear/matmul MACs (295.4M when each dynamic ReLU
activation counts 3 ops, as the paper's MAdds do); 151M: 7.60M params, 146.2M MACs (151.7M).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.layers.mobile_former import Former, FormerToMobile, MobileSubBlock, MobileToFormer, pointwise_bn
from slimkit.models._base import ClassifierMixin, init_mobile_weights
from slimkit.registry import MODELS

__all__ = ["MobileFormer", "MobileFormerBlock", "build_mobile_former"]

# The rows after the stem: (e1, out channels, stride, e2). Row 0 is the bottleneck-lite block (depthwise 3x3
# expanding e1 times, pointwise); the others are Mobile-Former blocks (stride-2 ones downsample, see MobileSubBlock).
_Row = tuple[int, int, int, int]


class BottleneckLite(nn.Module):
    """Depthwise 3x3 expanding `expand` times + ReLU6, pointwise projection; residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, groups: int = 1) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            pointwise_bn(hidden, cout, groups),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileFormerBlock(nn.Module):
    """Mobile->Former, Former, Mobile (dynamic ReLU from the updated first token), residual, Former->Mobile."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, expand2: int, token_dim: int,
                 bridge_heads: int = 2, former_heads: int = 4, groups: int = 1) -> None:
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        self.mobile_to_former = MobileToFormer(cin, token_dim, bridge_heads)
        self.former = Former(token_dim, former_heads)
        self.mobile = MobileSubBlock(cin, cout, stride, expand, token_dim, expand2, groups)
        self.former_to_mobile = FormerToMobile(cout, token_dim, bridge_heads)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.former(self.mobile_to_former(x, tokens))
        out = self.mobile(x, tokens)
        if self.use_res:
            out = out + x
        return self.former_to_mobile(out, tokens), tokens


class MobileFormer(ClassifierMixin, nn.Module):
    """Stem, bottleneck-lite, Mobile-Former blocks, a last Mobile->Former, 1x1 conv; head on [pooled map, token 0]."""

    def __init__(self, rows: tuple[_Row, ...], stem_chs: int, num_tokens: int, token_dim: int, head_hidden: int,
                 last_expand: int = 6, num_classes: int = 10, in_chans: int = 3, small_input: bool = False,
                 bridge_heads: int = 2, former_heads: int = 4, groups: int = 1, drop_rate: float = 0.2) -> None:
        super().__init__()
        if len(rows) < 2:
            raise ConfigError("MobileFormer needs a bottleneck-lite row and at least one Mobile-Former row")
        self.num_classes = num_classes
        self.num_features = head_hidden
        self.tokens = nn.Parameter(torch.randn(num_tokens, token_dim))
        self.stem = nn.Sequential(nn.Conv2d(in_chans, stem_chs, 3, 1 if small_input else 2, 1, bias=False),
                                  nn.BatchNorm2d(stem_chs), nn.ReLU6())
        first_down = next((i for i, r in enumerate(rows) if r[2] == 2), -1)
        strides = [1 if small_input and i == first_down else r[2] for i, r in enumerate(rows)]
        e1, cin, _, _ = rows[0]
        self.lite = BottleneckLite(stem_chs, cin, strides[0], e1, groups)
        blocks = []
        for (e1, cout, _, e2), s in zip(rows[1:], strides[1:], strict=True):
            blocks.append(MobileFormerBlock(cin, cout, s, e1, e2, token_dim, bridge_heads, former_heads, groups))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.mobile_to_former = MobileToFormer(cin, token_dim, bridge_heads)
        self.conv_head = nn.Sequential(pointwise_bn(cin, cin * last_expand, groups), nn.ReLU6())
        self.pool_act = nn.Hardswish()
        self.fc = nn.Sequential(nn.Linear(cin * last_expand + token_dim, head_hidden), nn.BatchNorm1d(head_hidden),
                                nn.Hardswish())
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(head_hidden, num_classes)
        init_mobile_weights(self)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images -> (final map after the 1x1 conv, N x C x H x W; global tokens, N x M x d)."""
        tokens = self.tokens.unsqueeze(0).repeat(x.shape[0], 1, 1)  # a copy: module hooks reject no-grad views
        x = self.lite(self.stem(x))
        for block in self.blocks:
            x, tokens = block(x, tokens)
        tokens = self.mobile_to_former(x, tokens)
        return self.conv_head(x), tokens

    def forward_head(self, feats: tuple[torch.Tensor, torch.Tensor],  # type: ignore[override]
                     pre_logits: bool = False) -> torch.Tensor:
        """(map, tokens) -> logits, or with `pre_logits` the FC + BN + h-swish embedding (num_features wide)."""
        x, tokens = feats
        x = self.fc(torch.cat([self.pool_act(x.mean((2, 3))), tokens[:, 0]], dim=1))
        return x if pre_logits else self.head(self.head_drop(x))


def _cfg(stem: int, rows: tuple[_Row, ...], tokens: int, dim: int, hidden: int, groups: int = 1) -> dict[str, Any]:
    return {"stem_chs": stem, "rows": rows, "num_tokens": tokens, "token_dim": dim, "head_hidden": hidden,
            "groups": groups}


# The paper's per-stage tables (Table 1 gives 294M), as in the authors' released configs: (e1, channels, stride, e2);
# e2 only matters in stride-2 blocks.
_CFGS: dict[str, dict[str, Any]] = {
    "mobile_former_508m": _cfg(24, (
        (2, 24, 1, 0), (6, 40, 2, 4), (3, 40, 1, 3), (6, 72, 2, 4), (3, 72, 1, 3), (6, 128, 2, 4), (4, 128, 1, 4),
        (6, 176, 1, 4), (6, 176, 1, 4), (6, 240, 2, 4), (6, 240, 1, 4), (6, 240, 1, 4)), 6, 192, 1920),
    "mobile_former_294m": _cfg(16, (
        (2, 16, 1, 0), (6, 24, 2, 4), (4, 24, 1, 4), (6, 48, 2, 4), (4, 48, 1, 4), (6, 96, 2, 4), (4, 96, 1, 4),
        (6, 128, 1, 4), (6, 128, 1, 4), (6, 192, 2, 4), (6, 192, 1, 4), (6, 192, 1, 4)), 6, 192, 1920),
    "mobile_former_214m": _cfg(12, (
        (2, 12, 1, 0), (6, 20, 2, 4), (3, 20, 1, 4), (6, 40, 2, 4), (4, 40, 1, 4), (6, 80, 2, 4), (4, 80, 1, 4),
        (6, 112, 1, 4), (6, 112, 1, 4), (6, 160, 2, 4), (6, 160, 1, 4), (6, 160, 1, 4)), 6, 192, 1600),
    "mobile_former_151m": _cfg(12, (
        (2, 12, 1, 0), (6, 16, 2, 4), (3, 16, 1, 3), (6, 32, 2, 4), (3, 32, 1, 3), (6, 64, 2, 4), (4, 64, 1, 4),
        (6, 88, 1, 4), (6, 88, 1, 4), (6, 128, 2, 4), (6, 128, 1, 4), (6, 128, 1, 4)), 6, 192, 1280),
    "mobile_former_96m": _cfg(12, (
        (2, 12, 1, 0), (6, 16, 2, 4), (6, 32, 2, 4), (3, 32, 1, 3), (6, 64, 2, 4), (4, 64, 1, 4), (6, 88, 1, 4),
        (6, 128, 2, 4), (6, 128, 1, 4)), 4, 128, 1280),
    "mobile_former_52m": _cfg(8, (
        (3, 12, 2, 0), (3, 12, 1, 3), (6, 24, 2, 4), (3, 24, 1, 3), (6, 48, 2, 4), (4, 48, 1, 4), (6, 64, 1, 4),
        (6, 96, 2, 4), (6, 96, 1, 4)), 3, 128, 1024),
}
_CFGS["mobile_former_26m"] = {**_CFGS["mobile_former_52m"], "groups": 4}  # 52M with 4-group pointwise convs


def build_mobile_former(variant: str = "mobile_former_294m", **kwargs: Any) -> MobileFormer:
    """Build a registered variant; keyword arguments (small_input, num_classes, drop_rate, ...) override."""
    if variant not in _CFGS:
        raise ConfigError(f"unknown Mobile-Former variant {variant!r}; choose one of {sorted(_CFGS)}")
    return MobileFormer(**{**_CFGS[variant], **kwargs})


for _name in _CFGS:
    MODELS.register(_name, input_size=(3, 224, 224), family="mobile_former", paper="arXiv:2108.05895",
                    small_input=True, partial_prune=_name == "mobile_former_26m")(
        lambda _n=_name, **kw: build_mobile_former(_n, **kw))
