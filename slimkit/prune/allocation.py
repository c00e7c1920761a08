"""How a pruning ratio is spread over the channel groups: the allocation, its rounding and its cap, and
`keep_counts`, the pure function every method uses to turn a ratio into kept channels per group.

"latency" (the default) cuts each group in proportion to the time per MAC it gives back (weights from
`slimkit.prune.latency`) and keeps whole vector blocks; "uniform" the same share everywhere (unrounded); "global"
the lowest-scored channels across groups; "global_latency" the lowest-scored per estimated nanosecond.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from slimkit.errors import ConfigError
from slimkit.graph import Group
from slimkit.profile import channel_multiple

__all__ = ["ALLOCATIONS", "Allocation", "keep_counts", "unit_multiple"]

ALLOCATIONS = ("latency", "uniform", "global", "global_latency")
_BY_LATENCY = ("latency", "global_latency")  # allocations that count whole blocks unless round_to says otherwise


@dataclass(frozen=True)
class Allocation:
    allocation: str = "latency"  # latency, uniform, global or global_latency
    round_to: int | Literal["auto"] | None = None  # counts in multiples of this (8) or "auto" (the CPU's block);
    # None: the allocation's own ("auto" for latency and global_latency, unrounded for uniform and global)
    max_group_ratio: float = 0.9  # never remove more than this share of one group

    def __post_init__(self) -> None:
        checks = [
            ("round_to", not isinstance(self.round_to, str) or self.round_to == "auto",
             f"must be a positive int or 'auto' (this CPU's channel block), got {self.round_to!r}"),
            ("round_to", not isinstance(self.round_to, int) or self.round_to >= 1,
             f"must be >= 1, got {self.round_to}"),
            ("allocation", self.allocation in ALLOCATIONS,
             f"must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}"),
            ("max_group_ratio", 0.0 < self.max_group_ratio < 1.0, f"must be in (0, 1), got {self.max_group_ratio}"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"{name} {rule}", option=name, detail=rule)

    @property
    def channel_round(self) -> int | None:
        """`round_to` as a number: 'auto' is the channel block of this machine's kernels (16 on AVX-512); None
        resolves by allocation (the latency allocations count whole blocks)."""
        r = self.round_to if self.round_to is not None else ("auto" if self.allocation in _BY_LATENCY else None)
        return channel_multiple() if r == "auto" else r  # type: ignore[return-value]


def _round_keep(keep: int, size: int, round_to: int | None) -> int:
    """Kept channels rounded to a multiple of `round_to` (at least one multiple: a group of exactly `round_to`
    channels stays whole, as a vector kernel pads what is cut back to its block width); smaller groups unrounded."""
    if round_to and size >= round_to:
        keep = max(round_to, int(round(keep / round_to)) * round_to)
    return int(min(size, max(1, keep)))


def unit_multiple(g: Group, multiple: int | None) -> int | None:
    """`multiple` channels in units of group `g`: a unit that spans several channels of every layer it touches (an
    attention head of 64) needs fewer units per vector block (one head is a whole block of 8 or 16)."""
    unit = min((m.repeat for m in g.members if m.role in ("in", "out")), default=1)
    return multiple // math.gcd(multiple, unit) if multiple else multiple


def keep_counts(groups: Sequence[Group], scores: dict[int, torch.Tensor], ratio: float, cfg: Allocation,
                weights: dict[int, float] | None = None) -> dict[int, int]:
    """How many channels each group keeps at `ratio`: uniform, the same share everywhere; latency, `ratio` times the
    group's weight (`slimkit.prune.latency.latency_weights`; 1 where none is given); global and global_latency, the
    lowest `scores` across groups."""
    cap, multiple = cfg.max_group_ratio, cfg.channel_round
    if cfg.allocation in ("uniform", "latency"):
        w = weights if cfg.allocation == "latency" and weights else {}
        out, carry = {}, 0.0  # rounding error carried on, so many equal groups do not all jump a block at once
        for g in groups:
            cut, m = min(ratio * w.get(g.id, 1.0), cap) * g.size, unit_multiple(g, multiple)
            if not m or g.size <= m:  # unrounded, or one block that stays whole: nothing to carry
                out[g.id] = _round_keep(g.size - math.floor(cut), g.size, m)
                continue
            out[g.id] = _round_keep(g.size - cut + carry, g.size, m)
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
    unit = {g.id: unit_multiple(g, multiple) for g in groups}
    return {gid: _round_keep(size[gid] - r, size[gid], unit[gid]) for gid, r in removed.items()}
