"""From kept channels per dependency group to kept indices per module dimension: the plan surgery applies.

Its own module so that every pruning method (one-shot, iterative, CHEX, latency costing) builds plans the same way
without importing the pruner.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from slimkit.graph import Group
from slimkit.prune.surgery import role_size

__all__ = ["module_plan"]


def module_plan(model: nn.Module, groups: Sequence[Group], keep: dict[int, list[int]]) -> dict[tuple[str, str], list]:
    """Translate kept channels per group into kept indices per (module, role) dimension."""
    mods = dict(model.named_modules())
    removed: dict[tuple[str, str], set[int]] = {}
    for g in groups:
        drop = sorted(set(range(g.size)) - set(keep[g.id]))
        if not drop:
            continue
        for m in g.members:
            idx = removed.setdefault((m.module, m.role), set())
            idx.update(m.index(g.size)[drop].flatten().tolist())
    plan = {}
    for (name, role), idx in removed.items():
        n = role_size(mods[name], role)
        plan[(name, role)] = [i for i in range(n) if i not in idx]
    return plan
