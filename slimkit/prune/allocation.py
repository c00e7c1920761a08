"""How a pruning ratio is spread over the channel groups: the allocation, its rounding and its cap, and
`keep_counts`, the pure function every method uses to turn a ratio into kept channels per group.

"latency" (the default) cuts each group in proportion to the time per MAC it gives back (weights from
`slimkit.prune.latency`) and keeps whole vector blocks; "uniform" the same share everywhere (unrounded); "global"
the lowest-scored channels across groups; "global_latency" the lowest-scored per estimated nanosecond.

`kernels="int8"` (for a model that will run in INT8) keeps, per group, the counts onnxruntime's fast INT8
convolutions take (`slimkit.profile.hardware.int8_conv_misses`): multiples of 16 through a depthwise convolution, of
8 out of a dense one (and at least 16 where the group has 16), of 4 into one (`channel_rules`). `kernels="auto"`
keeps those counts only where they still let a group shrink: a group they would hold whole (16 channels out of a
dense convolution: the fast kernel's minimum) while fp32's rounding would not keeps fp32's counts, and its
convolutions take onnxruntime's generic INT8 path (about fp32's speed) instead of costing the other groups the
channels it cannot give.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.graph import Group
from slimkit.profile import channel_multiple
from slimkit.profile.hardware import (
    INT8_CONV_IN_MULTIPLE,
    INT8_CONV_MIN_OUT,
    INT8_CONV_OUT_MULTIPLE,
    INT8_DEPTHWISE_MULTIPLE,
)

__all__ = ["ALLOCATIONS", "KERNELS", "INT8_KERNELS", "Allocation", "ChannelRule", "channel_rules", "keep_counts",
           "unit_multiple"]

ALLOCATIONS = ("latency", "uniform", "global", "global_latency")
KERNELS = ("fp32", "int8", "auto")  # the kernels the pruned model will run on (auto: int8 where it costs no shrinking)
INT8_KERNELS = ("int8", "auto")  # the kernels values of a model that will run in INT8
_BY_LATENCY = ("latency", "global_latency")  # allocations that count whole blocks unless round_to says otherwise


@dataclass(frozen=True)
class Allocation:
    allocation: str = "latency"  # latency, uniform, global or global_latency
    round_to: int | Literal["auto"] | None = None  # counts in multiples of this (8) or "auto" (the CPU's block);
    # None: the allocation's own ("auto" for latency and global_latency, unrounded for uniform and global)
    max_group_ratio: float = 0.9  # never remove more than this share of one group
    kernels: str = "fp32"  # fp32; int8: also the counts onnxruntime's fast INT8 convolutions take; auto: those
    # counts where they leave the group room to shrink (else fp32's)

    def __post_init__(self) -> None:
        checks = [
            ("round_to", not isinstance(self.round_to, str) or self.round_to == "auto",
             f"must be a positive int or 'auto' (this CPU's channel block), got {self.round_to!r}"),
            ("round_to", not isinstance(self.round_to, int) or self.round_to >= 1,
             f"must be >= 1, got {self.round_to}"),
            ("allocation", self.allocation in ALLOCATIONS,
             f"must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}"),
            ("max_group_ratio", 0.0 < self.max_group_ratio < 1.0, f"must be in (0, 1), got {self.max_group_ratio}"),
            ("kernels", self.kernels in KERNELS, f"must be one of {', '.join(KERNELS)}, got {self.kernels!r}"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError.for_option(name, rule)

    @property
    def channel_round(self) -> int | None:
        """`round_to` as a number: 'auto' is the channel block of this machine's kernels (16 on AVX-512); None
        resolves by allocation (the latency allocations count whole blocks)."""
        r = self.round_to if self.round_to is not None else ("auto" if self.allocation in _BY_LATENCY else None)
        return channel_multiple() if r == "auto" else r  # type: ignore[return-value]


@dataclass(frozen=True)
class ChannelRule:
    """The counts a group may keep, in its own units: multiples of `multiple` (None: any), at least `minimum`."""

    multiple: int | None = None
    minimum: int = 0

    def holds_whole(self, size: int) -> bool:
        """Whether a group of `size` channels can keep only all of them under this rule (as `_round_keep` rounds:
        at least one multiple, and `minimum`)."""
        low = self.multiple if self.multiple and size >= self.multiple else 1
        return max(low, self.minimum if self.minimum <= size else 0) >= size


def _round_keep(keep: float, size: int, round_to: int | None, minimum: int = 0) -> int:
    """Kept channels rounded to a multiple of `round_to` (at least one multiple: a group of exactly `round_to`
    channels stays whole, as a vector kernel pads what is cut back to its block width), and at least `minimum` (a
    multiple of `round_to`); smaller groups unrounded."""
    if round_to and size >= round_to:
        keep = max(round_to, int(round(keep / round_to)) * round_to)
    if size >= minimum:
        keep = max(keep, minimum)
    return int(min(size, max(1, keep)))


def unit_multiple(g: Group, multiple: int | None) -> int | None:
    """`multiple` channels in units of group `g`: a unit that spans several channels of every layer it touches (an
    attention head of 64) needs fewer units per vector block (one head is a whole block of 8 or 16)."""
    unit = min((m.repeat for m in g.members if m.role in ("in", "out")), default=1)
    return multiple // math.gcd(multiple, unit) if multiple else multiple


def channel_rules(groups: Sequence[Group], model: nn.Module, cfg: Allocation) -> dict[int, ChannelRule]:
    """Per group, the counts it may keep: whole vector blocks of `cfg.channel_round`; with `cfg.kernels == "int8"`
    also what onnxruntime's fast INT8 convolution takes for every convolution the group's channels pass through
    (input multiple of 4, output multiple of 8 and at least 16, depthwise multiple of 16;
    `slimkit.profile.hardware.int8_conv_misses`). A group smaller than a rule asks for is left to the others. With
    `cfg.kernels == "auto"`, a group the INT8 counts would hold whole, and fp32's would not, keeps fp32's."""
    mods = dict(model.named_modules()) if cfg.kernels in INT8_KERNELS else {}
    out = {}
    for g in groups:
        plain = unit_multiple(g, cfg.channel_round)
        multiple, minimum = plain or 1, 0
        for m in g.members:
            conv = mods.get(m.module)
            if not isinstance(conv, nn.Conv2d) or m.role not in ("in", "out", "dw"):
                continue
            unit = m.tile * m.repeat  # channels of the convolution per channel of the group
            dense = conv.groups == 1
            need = INT8_DEPTHWISE_MULTIPLE if m.role == "dw" else INT8_CONV_OUT_MULTIPLE if m.role == "out" else \
                INT8_CONV_IN_MULTIPLE
            if (dense or m.role == "dw") and g.size * unit >= need:
                multiple = math.lcm(multiple, need // math.gcd(need, unit))
            if dense and m.role == "out" and g.size * unit == conv.out_channels >= INT8_CONV_MIN_OUT:
                minimum = max(minimum, -(-INT8_CONV_MIN_OUT // unit))
        minimum = -(-minimum // multiple) * multiple
        rule = ChannelRule(multiple if multiple > 1 else None, minimum if minimum <= g.size else 0)
        fp32 = ChannelRule(plain if plain and plain > 1 else None)
        auto_exempt = cfg.kernels == "auto" and rule.holds_whole(g.size) and not fp32.holds_whole(g.size)
        out[g.id] = fp32 if auto_exempt else rule
    return out


def keep_counts(groups: Sequence[Group], scores: dict[int, torch.Tensor], ratio: float, cfg: Allocation,
                weights: dict[int, float] | None = None, rules: dict[int, ChannelRule] | None = None
                ) -> dict[int, int]:
    """How many channels each group keeps at `ratio`: uniform, the same share everywhere; latency, `ratio` times the
    group's weight (`slimkit.prune.latency.latency_weights`; 1 where none is given); global and global_latency, the
    lowest `scores` across groups. Counts follow `rules` (`channel_rules`; default: whole blocks of
    `cfg.channel_round`)."""
    cap = cfg.max_group_ratio
    rule = {g.id: (rules or {}).get(g.id) or ChannelRule(unit_multiple(g, cfg.channel_round)) for g in groups}
    if cfg.allocation in ("uniform", "latency"):
        w = weights if cfg.allocation == "latency" and weights else {}
        out, carry = {}, 0.0  # rounding error carried on, so many equal groups do not all jump a block at once
        for g in groups:
            cut, m, low = min(ratio * w.get(g.id, 1.0), cap) * g.size, rule[g.id].multiple, rule[g.id].minimum
            if not m or g.size <= m:  # unrounded, or one block that stays whole: nothing to carry
                out[g.id] = _round_keep(g.size - math.floor(cut), g.size, m, low)
                continue
            out[g.id] = _round_keep(g.size - cut + carry, g.size, m, low)
            carry = max(-m, min(m, g.size - cut + carry - out[g.id]))
        return out
    total = sum(g.size for g in groups)
    removable = sorted((float(s), g.id) for g in groups for s in scores[g.id])
    removed = {g.id: 0 for g in groups}
    size = {g.id: g.size for g in groups}
    budget = int(ratio * total)
    for _, gid in removable:
        if budget <= 0:
            break
        if removed[gid] + 1 <= math.floor(cap * size[gid]):
            removed[gid] += 1
            budget -= 1
    return {gid: _round_keep(size[gid] - r, size[gid], rule[gid].multiple, rule[gid].minimum)
            for gid, r in removed.items()}
