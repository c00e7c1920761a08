"""Iterative pruning: prune a little, fine-tune, repeat, until the budget. The schedule is a pure function."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

from torch import nn

from slimkit.errors import ConfigError
from slimkit.profile import count_macs, count_params
from slimkit.prune.budget import Budget
from slimkit.prune.method import PruneJob, PruningMethod
from slimkit.prune.pruner import PruneConfig, Pruner, run_or_unrounded
from slimkit.prune.validate import as_example_inputs
from slimkit.registry import PRUNERS

__all__ = ["Iterative", "keep_schedule", "iterative_prune"]


def keep_schedule(step: int, steps: int, final_keep: float, kind: Literal["linear", "geometric"] = "geometric"
                  ) -> float:
    """Fraction of the original cost kept after `step` (1-based) of `steps`: linear in the removed share, or
    geometric (the same relative cut at every step, gentler on the last ones)."""
    if not 0 < final_keep <= 1 or steps < 1 or not 1 <= step <= steps:
        raise ConfigError(f"need 0 < final_keep <= 1 and 1 <= step <= steps (got {final_keep}, {step}, {steps})")
    if kind == "linear":
        return 1.0 - (1.0 - final_keep) * step / steps
    if kind == "geometric":
        return math.exp(math.log(final_keep) * step / steps)
    raise ConfigError(f"unknown schedule {kind!r}: use 'linear' or 'geometric'")


def iterative_prune(model: nn.Module, example_inputs: Any, *, steps: int = 3, macs_target: float | None = None,
                    params_target: float | None = None, schedule: Literal["linear", "geometric"] = "geometric",
                    finetune: Callable[[nn.Module, int], None] | None = None, importance: str = "l1",
                    ignored_layers: Sequence[str] = (), allocation: str = "latency", round_to: int | str | None = None,
                    data: Any = None, max_group_ratio: float = 0.9, kernels: str | None = "fp32") -> nn.Module:
    """Prune `steps` times towards a MACs or params fraction of the *original* model, calling `finetune(model,
    step)` after each step (e.g. a few epochs with `slimkit.train.Trainer`). Returns the final pruned copy."""
    if (macs_target is None) == (params_target is None):
        raise ConfigError("give exactly one of macs_target or params_target (a fraction of the original, <= 1)")
    budget = Budget.of(macs_target=macs_target, params_target=params_target)
    inputs = as_example_inputs(example_inputs)
    measure = (lambda m: count_macs(m, inputs)) if budget.kind == "macs_target" else count_params
    original = measure(model)
    current = model
    for step in range(1, steps + 1):
        target = keep_schedule(step, steps, budget.value, schedule) * original
        cfg = PruneConfig(importance=importance, ignored_layers=tuple(ignored_layers), allocation=allocation,
                          round_to=round_to, max_group_ratio=max_group_ratio, kernels=kernels,
                          **Budget(budget.kind, target).kwargs())
        if measure(current) > target:  # an earlier step may already have cut past this one (whole-block steps)
            current = run_or_unrounded(Pruner(current, inputs, cfg, data=data))
        if finetune is not None:
            finetune(current, step)
    return current


@PRUNERS.register("iterative")
class Iterative(PruningMethod):
    """Three prune + fine-tune rounds towards a MACs or params fraction (`iterative_prune`, the job's `finetune`)."""

    name = "iterative"
    budgets = ("macs_target", "params_target")
    fractions_only = True
    rounds = 3

    def run(self, job: PruneJob) -> nn.Module:
        c = job.config
        return iterative_prune(job.model, job.example_inputs, steps=self.rounds, finetune=job.finetune,
                               importance=c.importance, ignored_layers=c.ignored_layers, round_to=c.round_to,
                               allocation=c.allocation, max_group_ratio=c.max_group_ratio, data=job.data,
                               kernels=c.kernels,
                               **c.budget.kwargs())
