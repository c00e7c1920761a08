"""MicroNet (Li et al., "MicroNet: Improving Image Recognition with Extremely Low FLOPs", arXiv:2011.12289).

Variants follow the EARLIER PUBLIC RELEASE (arXiv v1 Table 1 and the authors' released M0-M3 models): M0 / M1 / M2 /
M3 at 4 / 6 / 12 / 21M MAdds, 1.0 / 1.8 / 2.4 / 2.6M params, 46.6 / 51.4 / 59.4 / 62.5 top-1. (The ICCV version
renames and re-scales them: its M0 is 6M MAdds, its M1 61.1% at 12M; those are not built here.)

Layout: a micro-factorized 3x3 stem (3x1 conv, 1x3 grouped conv with multiplier, shuffle, ReLU6), then blocks of
  * Micro-Block-A (no expansion conv): micro-factorized depthwise conv with multipliers (expands C), Dynamic Shift-Max,
    a group conv squeezing to C_out (the first half of a micro-factorized pointwise conv), Dynamic Shift-Max (K=1);
  * Micro-Block-B: a group conv expanding C_in (the second half of the previous block's micro-factorized pointwise
    conv), Dynamic Shift-Max, micro-factorized depthwise conv, Dynamic Shift-Max, squeezing group conv, Shift-Max;
  * the final Micro-Block-C (squeeze groups 0): only the expanding group conv and its activation;
with an identity shortcut when shape allows. Head: ReLU6, global pool, h-swish, FC + BN + h-swish (num_features),
dropout, FC classifier. The released head also puts BN + h-swish on the logits; slimkit keeps plain logits (2 x
num_classes BN parameters fewer). Channel shuffles (pure permutations, no cost) follow each group conv with that conv's
group count; Shift-Max shifts by one group of C / G channels as the paper defines. `small_input=True` keeps the stem and
the first block at stride 1 (total stride 8) for 28x28 / 32x32 images.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.errors import ConfigError, UnknownNameError
from slimkit.layers.conv import conv_bn
from slimkit.layers.micro import ChannelShuffle, DynamicShiftMax, MicroDepthwiseConv
from slimkit.models._base import ClassifierMixin
from slimkit.registry import MODELS

__all__ = ["MicroBlock", "MicroNet", "build_micronet"]


def _gconv_bn(cin: int, cout: int, groups: int) -> nn.Sequential:
    return conv_bn(cin, cout, 1, 1, groups)  # grouped 1x1 conv + BN


def _act(kind: int, channels: int, groups: int, reduction: int, init: tuple[tuple[float, ...], ...],
         fallback: bool) -> nn.Module:
    """kind 2: Shift-Max (J=2, K=2); kind 1: dynamic linear shift (J=2, K=1); kind 0: ReLU6 or nothing."""
    if kind == 0:
        return nn.ReLU6() if fallback else nn.Identity()
    return DynamicShiftMax(channels, groups, reduction, fusions=kind, shifts=2, init=init[:kind])


class MicroBlock(nn.Module):
    """One Micro-Block; `row` = (stride, out, k, m1, m2, g_expand, g_act, g_squeeze, g_out, y1, y2, y3, r)."""

    def __init__(self, cin: int, row: tuple[int, ...], init: tuple[tuple[float, ...], ...],
                 reduction: int = 8) -> None:
        super().__init__()
        stride, cout, k, m1, m2, g_exp, g_act, g_sq, g_out, y1, y2, y3, r = row
        red = reduction * r
        lin = ((1.0, 0.0),)  # the linear (K=1) Shift-Max after a squeeze starts as the identity
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        hidden = cin * m1 * m2
        if g_exp == 0:  # Micro-Block-A: depthwise first, multipliers expand
            layers += [MicroDepthwiseConv(cin, k, stride, (m1, m2)), _act(y2, hidden, g_act, red, init, True),
                       _gconv_bn(hidden, cout, g_sq), _act(y3, cout, g_out, red // 2, lin, False),
                       ChannelShuffle(g_sq)]
        else:
            layers += [_gconv_bn(cin, hidden, g_exp)]
            if g_out == 0:  # Micro-Block-C: the last expansion only
                layers += [_act(y3, hidden, g_act, red, lin, False)]
                cout, self.use_res = hidden, False
            else:  # Micro-Block-B
                layers += [_act(y1, hidden, g_act, red, init, True), ChannelShuffle(g_exp),
                           MicroDepthwiseConv(hidden, k, stride), _act(y2, hidden, hidden // g_act, red, init, True),
                           _gconv_bn(hidden, cout, g_sq),
                           _act(y3, cout, g_out, red // 2 if cout < hidden else red, lin, False),
                           ChannelShuffle(g_sq)]
        self.out_chans = cout
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.use_res else out


class MicroNet(ClassifierMixin, nn.Module):
    def __init__(self, blocks: tuple[tuple[int, ...], ...], stem: tuple[int, int], num_features: int,
                 init: tuple[tuple[float, ...], ...] = ((1.0, 0.0), (1.0, 0.0)), num_classes: int = 1000,
                 in_chans: int = 3, small_input: bool = False, drop_rate: float = 0.05) -> None:
        super().__init__()
        if any(len(b) != 13 for b in blocks) or len(stem) != 2:
            raise ConfigError("MicroNet: blocks need 13 fields (stride, out, k, m1, m2, g_expand, g_act, g_squeeze, "
                              "g_out, y1, y2, y3, r) and stem two (groups of the 3x1 conv, multiplier of the 1x3 conv)")
        g1, g2 = stem
        s0 = 1 if small_input else 2
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, g1, (3, 1), (s0, 1), (1, 0), bias=False), nn.BatchNorm2d(g1),
            nn.Conv2d(g1, g1 * g2, (1, 3), (1, s0), (0, 1), groups=g1, bias=False), nn.BatchNorm2d(g1 * g2),
            ChannelShuffle(g1), nn.ReLU6())
        cin, layers = g1 * g2, []
        for i, row in enumerate(blocks):
            if small_input and i == 0:
                row = (1, *row[1:])
            layers.append(MicroBlock(cin, row, init))
            cin = layers[-1].out_chans
        self.blocks = nn.Sequential(*layers)
        self.final_act = nn.ReLU6()
        self.pool_act = nn.Hardswish()
        self.pre_logits = nn.Sequential(nn.Linear(cin, num_features), nn.BatchNorm1d(num_features), nn.Hardswish())
        self.num_features, self.num_classes = num_features, num_classes
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He init on the true fan-out of a group conv (k_h k_w C_out / groups)
                fan_out = m.weight[0, 0].numel() * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0, (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(self.blocks(self.stem(x)))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pre_logits(self.pool_act(x.mean((2, 3))))
        return x if pre_logits else self.head(self.head_drop(x))


# rows: stride, out, k, m1, m2, g_expand (0: Micro-Block-A), g_act, g_squeeze, g_out (0: Micro-Block-C),
#       y1, y2, y3 (2: Shift-Max J=2 K=2, 1: K=1, 0: ReLU6 / none), r (hyper-function reduction 8 * r)
_CFGS: dict[str, dict[str, Any]] = {
    "micronet_m0": {"stem": (2, 2), "num_features": 640, "drop_rate": 0.05, "blocks": (
        (2, 8, 3, 2, 2, 0, 4, 2, 2, 2, 0, 1, 1), (2, 12, 3, 2, 2, 0, 8, 4, 4, 2, 2, 1, 1),
        (2, 16, 5, 2, 2, 0, 12, 4, 4, 2, 2, 1, 1), (1, 32, 5, 1, 4, 4, 4, 4, 4, 2, 2, 1, 1),
        (2, 64, 5, 1, 4, 8, 8, 8, 8, 2, 2, 1, 1), (1, 96, 3, 1, 4, 8, 8, 8, 8, 2, 2, 1, 2),
        (1, 384, 3, 1, 4, 12, 12, 0, 0, 2, 2, 1, 2))},
    "micronet_m1": {"stem": (3, 2), "num_features": 960, "drop_rate": 0.05, "blocks": (
        (2, 8, 3, 2, 2, 0, 6, 2, 2, 2, 0, 1, 1), (2, 16, 3, 2, 2, 0, 8, 4, 4, 2, 2, 1, 1),
        (2, 16, 5, 2, 2, 0, 16, 4, 4, 2, 2, 1, 1), (1, 32, 5, 1, 6, 4, 4, 4, 4, 2, 2, 1, 1),
        (2, 64, 5, 1, 6, 8, 8, 8, 8, 2, 2, 1, 1), (1, 96, 3, 1, 6, 8, 8, 8, 8, 2, 2, 1, 2),
        (1, 576, 3, 1, 6, 12, 12, 0, 0, 2, 2, 1, 2))},
    "micronet_m2": {"stem": (4, 2), "num_features": 1024, "drop_rate": 0.1, "blocks": (
        (2, 12, 3, 2, 2, 0, 8, 4, 4, 2, 0, 1, 1), (2, 16, 3, 2, 2, 0, 12, 4, 4, 2, 2, 1, 1),
        (1, 24, 3, 2, 2, 0, 16, 4, 4, 2, 2, 1, 1), (2, 32, 5, 1, 6, 6, 6, 4, 4, 2, 2, 1, 1),
        (1, 32, 5, 1, 6, 8, 8, 4, 4, 2, 2, 1, 2), (1, 64, 5, 1, 6, 8, 8, 8, 8, 2, 2, 1, 2),
        (2, 96, 5, 1, 6, 8, 8, 8, 8, 2, 2, 1, 2), (1, 128, 3, 1, 6, 12, 12, 8, 8, 2, 2, 1, 2),
        (1, 768, 3, 1, 6, 16, 16, 0, 0, 2, 2, 1, 2))},
    "micronet_m3": {"stem": (4, 3), "num_features": 1024, "drop_rate": 0.1, "init": ((1.0, 0.0), (0.5, 0.5)),
                    "blocks": (
        (2, 16, 3, 2, 2, 0, 12, 4, 4, 0, 2, 0, 1), (2, 24, 3, 2, 2, 0, 16, 4, 4, 0, 2, 0, 1),
        (1, 24, 3, 2, 2, 0, 24, 4, 4, 0, 2, 0, 1), (2, 32, 5, 1, 6, 6, 6, 4, 4, 0, 2, 0, 1),
        (1, 32, 5, 1, 6, 8, 8, 4, 4, 0, 2, 0, 2), (1, 64, 5, 1, 6, 8, 8, 8, 8, 0, 2, 0, 2),
        (1, 80, 5, 1, 6, 8, 8, 8, 8, 0, 2, 0, 2), (1, 80, 5, 1, 6, 10, 10, 8, 8, 0, 2, 0, 2),
        (2, 120, 5, 1, 6, 10, 10, 10, 10, 0, 2, 0, 2), (1, 120, 5, 1, 6, 12, 12, 10, 10, 0, 2, 0, 2),
        (1, 144, 3, 1, 6, 12, 12, 12, 12, 0, 2, 0, 2), (1, 864, 3, 1, 6, 12, 12, 0, 0, 0, 2, 0, 2))},
}


def build_micronet(variant: str = "micronet_m1", **kwargs: Any) -> MicroNet:
    """Build a registered variant; keyword arguments (num_classes, in_chans, small_input, ...) override."""
    if variant not in _CFGS:
        raise UnknownNameError(f"unknown MicroNet variant {variant!r}; choose one of {sorted(_CFGS)}")
    return MicroNet(**{**_CFGS[variant], **kwargs})


for _name in _CFGS:
    MODELS.register(_name, input_size=(3, 224, 224), family="micronet", paper="arXiv:2011.12289", small_input=True,
                    partial_prune=True)(
        lambda _n=_name, **kw: build_micronet(_n, **kw)
    )
