"""Sandglass block (Zhou et al., "Rethinking Bottleneck Structure for Efficient Mobile Network Design", ECCV 2020).

The flipped inverted residual (the paper's Table 2): for a wide input with M channels,

    dw 3x3 + BN + act  (M -> M, spatial work on the wide tensor)
    pw 1x1 + BN        (M -> M / t, linear bottleneck: no activation in the narrow middle)
    pw 1x1 + BN + act  (M / t -> N)
    dw 3x3 + BN        (N -> N, stride s, linear)

and an identity shortcut between the wide input and wide output when stride is 1 and M == N. The identity tensor
multiplier (paper Sec. 3.4) adds the shortcut on only the first round(N * multiplier) channels, which saves the
elementwise adds on the rest. `first_dw=False` drops the first depthwise conv; the MobileNeXt builder uses that
for blocks whose channel count changes (see slimkit/models/mobilenext.py for why).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.layers.conv import conv_bn

__all__ = ["SandglassBlock", "sandglass_hidden"]


def sandglass_hidden(cin: int, cout: int, reduction: int, divisor: int = 16) -> int:
    """Bottleneck width cin // t, but never thinner than cout / 6 rounded up to a multiple of `divisor`."""
    hidden = cin // reduction
    floor = -(-cout // 6)  # ceil(cout / 6)
    if hidden < floor:
        hidden = max(divisor, -(-floor // divisor) * divisor)
    return hidden


class SandglassBlock(nn.Module):
    """dw -> pw reduce (linear) -> pw expand -> dw (strided, linear), shortcut between the wide ends."""

    def __init__(self, cin: int, cout: int, stride: int = 1, reduction: int = 6, hidden: int | None = None,
                 identity_multiplier: float = 1.0, first_dw: bool = True,
                 act_layer: Callable[..., nn.Module] = nn.ReLU6) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ConfigError(f"SandglassBlock stride must be 1 or 2, got {stride}")
        if not 0.0 < identity_multiplier <= 1.0:
            raise ConfigError(f"identity_multiplier is the share of channels with a shortcut, in (0, 1]; "
                              f"got {identity_multiplier}")
        hidden = sandglass_hidden(cin, cout, reduction) if hidden is None else hidden
        self.dw1 = conv_bn(cin, cin, 3, 1, cin, act_layer) if first_dw else nn.Identity()
        self.reduce = conv_bn(cin, hidden, 1, 1, 1, None)
        self.expand = conv_bn(hidden, cout, 1, 1, 1, act_layer)
        self.dw2 = conv_bn(cout, cout, 3, stride, cout, None)
        self.use_res = stride == 1 and cin == cout
        self.id_channels = int(round(cout * identity_multiplier)) if self.use_res else 0
        self.partial = self.use_res and self.id_channels < cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dw2(self.expand(self.reduce(self.dw1(x))))
        if not self.use_res:
            return out
        if not self.partial:
            return out + x
        k = self.id_channels
        return torch.cat([out[:, :k] + x[:, :k], out[:, k:]], 1)
