"""The pruning record: how a pruned model was made from its original, and what the method reports about it.

A record is JSON: `{"version": 1, "steps": [[[module, role, kept indices], ...], ...], "model": {"name", "kwargs"}
(when known), "importance": ..., and what the method adds (ratio, budget, kept_whole)}`. Replaying its steps with
`apply_plan` on a fresh original rebuilds the pruned structure (`slimkit.prune.io`).

A pruned model carries its record as the attribute `slimkit_pruning` (so `slimkit.prune.save(pruned, path)` needs
nothing else); this module is the one place that reads and writes that attribute: `record_of(model)`,
`with_record(model, record)`, and `next_record(original, plan, **info)` for a method that has just cut `original`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

__all__ = ["RECORD_ATTR", "next_record", "record_of", "with_record"]

RECORD_ATTR = "slimkit_pruning"
VERSION = 1


def record_of(model: nn.Module) -> dict[str, Any] | None:
    """The record `model` carries (None: it was not pruned by slimkit, or not reloaded from a pruned file)."""
    return getattr(model, RECORD_ATTR, None)


def with_record(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """`model` carrying `record` (set in place; returned for chaining)."""
    setattr(model, RECORD_ATTR, record)
    return model


def next_record(original: nn.Module, plan: dict[tuple[str, str], list[int]] | dict[str, Any],
                rewrites: list[str] | tuple[str, ...] = (), **info: Any) -> dict[str, Any]:
    """The record of a model made from `original` by one more step: `plan` ((module, role) -> kept indices), or a
    step already in record form (a dict, e.g. a token step). `original`'s steps (a model pruned before grows by one
    step), its model spec and its equivalent rewrites are kept; `rewrites` made now are added; then `info` (what the
    method reports: criterion, ratio, budget, ...)."""
    earlier = record_of(original) or {}
    step = plan if "kind" in plan else [[n, r, k] for (n, r), k in plan.items()]
    done = [*earlier.get("rewrites", []), *rewrites]
    return {**{k: v for k, v in earlier.items() if k == "model"}, "version": VERSION,
            **({"rewrites": done} if done else {}), "steps": [*earlier.get("steps", []), step], **info}
