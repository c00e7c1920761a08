"""Latency-aware channel allocation: what one channel of each group costs in measured time on this machine.

MACs are a poor proxy for CPU latency (a 1x1 conv at 7x7 and a 3x3 conv at 28x28 of equal MACs run at different
speeds, and some layers are bound by memory traffic or per-op overhead). `group_latency_costs` measures, for every
group, how much faster the model gets when that group alone loses a share of its channels; `latency_weighted_scores`
divides each group's (mean-normalised) importance by its relative cost, so global ranking removes channels that buy
the most time per unit of importance. The measure is injected, so tests use a deterministic stand-in.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from slimkit.graph import Group
from slimkit.prune.plan import module_plan
from slimkit.prune.surgery import apply_plan

__all__ = ["group_latency_costs", "latency_weighted_scores"]


def group_latency_costs(model: nn.Module, groups: Sequence[Group], measure: Callable[[nn.Module], float],
                        share: float = 0.5, plan_fn: Callable[..., dict] | None = None,
                        round_to: int | None = None) -> dict[int, float]:
    """Milliseconds saved per removed channel, per group: (t(model) - t(model with `share` of g cut)) / removed.

    With `round_to`, the cut keeps a multiple of it (as pruning will) and removes at least one block, so a group
    whose time only steps at block boundaries is measured across one; a group of one block cannot shrink: cost 0.

    Negative or zero savings (noise, or a layer whose time does not shrink) are kept as measured; the caller decides
    how to floor them. `plan_fn(model, groups, keep)` builds the cut's plan (default `module_plan`).
    """
    plan_fn = plan_fn or module_plan
    base = measure(model)
    costs = {}
    for g in groups:
        removed = max(1, int(share * g.size))
        if round_to and g.size >= round_to:
            kept = max(round_to, min(round((g.size - removed) / round_to) * round_to, g.size - round_to))
            removed = g.size - kept
            if removed == 0:
                costs[g.id] = 0.0
                continue
        if removed >= g.size:
            costs[g.id] = 0.0
            continue
        keep = {g.id: list(range(g.size - removed))}
        cut = apply_plan(copy.deepcopy(model), plan_fn(model, [g], keep))
        costs[g.id] = (base - measure(cut)) / removed
    return costs


def latency_weighted_scores(scores: dict[int, torch.Tensor], costs: dict[int, float], floor: float = 0.05
                            ) -> dict[int, torch.Tensor]:
    """Scores comparable across groups (each group's mean scaled to 1) divided by the group's relative latency cost
    (its cost over the mean positive cost, floored at `floor` so free-looking groups are not pruned for nothing)."""
    positive = [c for c in costs.values() if c > 0]
    mean_cost = sum(positive) / len(positive) if positive else 1.0
    out = {}
    for gid, s in scores.items():
        rel = max(costs.get(gid, 0.0) / mean_cost, floor)
        out[gid] = s / (s.mean().clamp_min(1e-12)) / rel
    return out
