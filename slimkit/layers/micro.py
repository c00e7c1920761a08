"""MicroNet layers (Li et al., "MicroNet: Improving Image Recognition with Extremely Low FLOPs", arXiv:2011.12289).

* Micro-Factorized pointwise conv: a C_in x C_out 1x1 conv replaced by two group convs with a channel shuffle
  between them: C_in -> C_in / R (G1 groups), shuffle, C_in / R -> C_out (G2 groups). With G1 * G2 = C_in / R every
  output channel is connected to every input channel by exactly one path (the paper's "G = sqrt(C / R)").
* Micro-Factorized depthwise conv: a k x k depthwise conv replaced by a k x 1 then a 1 x k depthwise conv, each with
  a channel multiplier, so C channels become C * m1 * m2 at O(k) instead of O(k^2) cost.
* Dynamic Shift-Max: y_i = max_k sum_j a^k_{i,j}(x) * x_{(i + j C / G) mod C}: J circular shifts by one group of
  C / G channels, K fusions, and the coefficients a come from a squeeze-excite style hyper-function of the input
  (global average pool -> FC -> ReLU -> FC -> h-sigmoid, rescaled to [-coef_range, coef_range] around `init`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.errors import ConfigError

__all__ = ["channel_shuffle", "ChannelShuffle", "MicroPointwiseConv", "MicroDepthwiseConv", "DynamicShiftMax",
           "shift_max_squeeze"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle: view channels as (groups, C / groups), transpose, flatten."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.groups == 1 else channel_shuffle(x, self.groups)


def _check_groups(where: str, channels: int, groups: int) -> None:
    if groups < 1 or channels % groups:
        raise ConfigError(f"{where}: {channels} channels do not split into {groups} groups; "
                          f"choose a group count that divides {channels}")


class MicroPointwiseConv(nn.Module):
    """1x1 conv factorized as group conv (C_in -> C_in / R, G1 groups), shuffle(G1), group conv (-> C_out, G2).

    `groups=None` picks the paper's balanced G1 = G2 = sqrt(C_in / R) when C_in / R is a perfect square.
    """

    def __init__(self, in_chans: int, out_chans: int, reduction: int = 2,
                 groups: tuple[int, int] | None = None, norm: bool = True) -> None:
        super().__init__()
        if in_chans % reduction:
            raise ConfigError(f"MicroPointwiseConv: in_chans={in_chans} is not divisible by reduction={reduction}")
        mid = in_chans // reduction
        if groups is None:
            g = round(mid ** 0.5)
            if g * g != mid:
                raise ConfigError(f"MicroPointwiseConv: C/R = {mid} is not a perfect square; pass groups=(G1, G2) "
                                  f"with G1 * G2 = {mid}")
            groups = (g, g)
        g1, g2 = groups
        _check_groups("MicroPointwiseConv (first conv, input)", in_chans, g1)
        _check_groups("MicroPointwiseConv (first conv, output)", mid, g1)
        _check_groups("MicroPointwiseConv (second conv, output)", out_chans, g2)
        _check_groups("MicroPointwiseConv (second conv, input)", mid, g2)
        self.squeeze = nn.Conv2d(in_chans, mid, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid) if norm else nn.Identity()
        self.shuffle = ChannelShuffle(g1)
        self.expand = nn.Conv2d(mid, out_chans, 1, groups=g2, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chans) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.expand(self.shuffle(self.bn1(self.squeeze(x)))))


class MicroDepthwiseConv(nn.Module):
    """k x k depthwise conv factorized as k x 1 (multiplier m1) then 1 x k (multiplier m2): C -> C * m1 * m2."""

    def __init__(self, channels: int, kernel_size: int = 3, stride: int = 1,
                 multipliers: tuple[int, int] = (1, 1), norm: bool = True) -> None:
        super().__init__()
        m1, m2 = multipliers
        if kernel_size % 2 == 0 or m1 < 1 or m2 < 1:
            raise ConfigError(f"MicroDepthwiseConv: need an odd kernel_size and multipliers >= 1, "
                              f"got kernel_size={kernel_size}, multipliers={multipliers}")
        mid, self.out_chans = channels * m1, channels * m1 * m2
        p = kernel_size // 2
        self.conv_v = nn.Conv2d(channels, mid, (kernel_size, 1), (stride, 1), (p, 0), groups=channels, bias=False)
        self.bn1 = nn.BatchNorm2d(mid) if norm else nn.Identity()
        self.conv_h = nn.Conv2d(mid, self.out_chans, (1, kernel_size), (1, stride), (0, p), groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(self.out_chans) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_h(self.bn1(self.conv_v(x))))


def shift_max_squeeze(channels: int, reduction: int) -> int:
    """Hidden width of the hyper-function: C / reduction rounded to a multiple of 4, at least 4."""
    v = channels // reduction
    new = max(4, int(v + 2) // 4 * 4)
    return new + 4 if new < 0.9 * v else new


class DynamicShiftMax(nn.Module):
    """Dynamic Shift-Max with J circular group shifts and K fusions (K=1 is a dynamic linear fusion, no max)."""

    def __init__(self, channels: int, groups: int, reduction: int = 8, fusions: int = 2, shifts: int = 2,
                 init: Sequence[Sequence[float]] = ((1.0, 0.0), (1.0, 0.0)), coef_range: float = 2.0) -> None:
        super().__init__()
        _check_groups("DynamicShiftMax", channels, groups)
        if fusions < 1 or shifts < 1 or len(init) < fusions or any(len(r) < shifts for r in init[:fusions]):
            raise ConfigError(f"DynamicShiftMax: need fusions, shifts >= 1 and init as `fusions` rows of `shifts` "
                              f"initial coefficients, got fusions={fusions}, shifts={shifts}, init={init}")
        self.channels, self.fusions, self.shifts, self.coef_range = channels, fusions, shifts, coef_range
        hidden = shift_max_squeeze(channels, reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels * fusions * shifts)
        step = channels // groups
        idx = torch.stack([(torch.arange(channels) + j * step) % channels for j in range(shifts)])
        self.register_buffer("index", idx, persistent=False)  # J x C: channel i of shift j reads x[index[j, i]]
        init_t = torch.tensor([list(r[:shifts]) for r in init[:fusions]], dtype=torch.float32)
        self.register_buffer("init", init_t[:, :, None].expand(-1, -1, channels).clone(), persistent=False)

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """N x K x J x C coefficients a^k_{i,j}(x)."""
        y = self.fc2(F.relu(self.fc1(x.mean((2, 3)))))
        y = (F.hardsigmoid(y) - 0.5) * (2 * self.coef_range)
        return y.unflatten(1, (self.fusions, self.shifts, self.channels)) + self.init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.coefficients(x)[..., None, None]  # N x K x J x C x 1 x 1
        shifted = torch.stack([x.index_select(1, self.index[j]) for j in range(self.shifts)], 1)  # N x J x C x H x W
        return (a * shifted.unsqueeze(1)).sum(2).amax(1)
