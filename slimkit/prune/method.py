"""The pruning-method interface: every way of pruning to a budget has one shape, registered in `PRUNERS`.

A method is a small class registered by name (`@PRUNERS.register("oneshot")`); `slimkit compress --method NAME`
builds it with `create_pruning_method(NAME)`, checks the budget before any work (`check`) and hands it a
`PruneJob`: the trained model, example inputs, the budget, the criterion settings, calibration batches, and the
job's training hooks (fine-tune a few epochs; train a model with callbacks; build the model afresh). `run(job)`
returns the pruned model carrying its pruning record. What a method accepts is class data the job and the CLI read
(`budgets`, `fractions_only`, `allocates`, `prunes_dims`, `rounds`), never a test of its name, so a method added
in one file appears in the CLI help, the job's dispatch and the contract tests (`tests/prune/test_methods.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.prune.budget import BUDGET_KINDS, Budget
from slimkit.registry import PRUNERS

if TYPE_CHECKING:
    from slimkit.prune.pruner import PruneConfig

__all__ = ["PruneJob", "PruningMethod", "create_pruning_method", "list_pruning_methods"]

_FLAGS = {"ratio": "--ratio", "macs_target": "--macs", "params_target": "--params", "latency_target": "--latency-ms"}


@dataclass
class PruneJob:
    """What a job hands a pruning method."""

    model: nn.Module  # the trained model to prune (never changed: methods return a pruned copy)
    example_inputs: tuple[torch.Tensor, ...]
    config: PruneConfig  # what `slimkit.prune` takes: the budget, criterion, allocation (methods with `allocates =
    # False` use their own), round_to, ignored_layers, transformer dims / ratios (methods with `prunes_dims`), seed
    data: Any = None  # labelled calibration batches for data-driven criteria
    finetune: Callable[[nn.Module, int], None] | None = None  # a few epochs after step `i` (iterative)
    train: Callable[[nn.Module, Sequence[Any]], None] | None = None  # train a model with callbacks (chex)
    fresh_model: Callable[[], nn.Module] | None = None  # the model to train from scratch (chex)
    train_steps: int = 0  # optimizer steps `train` takes
    steps_per_epoch: int = 1

    @property
    def budget(self) -> Budget | None:
        """The one budget (None when the config's per-dimension `ratios` replace it)."""
        return self.config.budget


class PruningMethod:
    """The base of every pruning method (see the module docstring). Subclasses set the class data and `run`."""

    name: ClassVar[str] = ""
    budgets: ClassVar[tuple[str, ...]] = BUDGET_KINDS  # budget kinds it meets
    fractions_only: ClassVar[bool] = False  # MACs / params only as a fraction of the original (no counts)
    allocates: ClassVar[bool] = True  # honours the job's `allocation` (False: allocates channels itself)
    prunes_dims: ClassVar[bool] = False  # takes transformer `dims` / per-dimension `ratios`
    rounds: ClassVar[int] = 1  # prune + fine-tune rounds: the job spreads its fine-tuning epochs over them

    def check(self, budget: Budget) -> None:
        """ConfigError (naming the option) when this method cannot meet `budget`; called before any work."""
        if budget.kind not in self.budgets or (self.fractions_only and budget.absolute):
            takes = " or ".join(_FLAGS[k] + (" (a fraction <= 1)" if self.fractions_only and k != "ratio" else "")
                                for k in self.budgets)
            detail = f"is not a budget method {self.name!r} meets: it takes {takes}"
            raise ConfigError(f"method {self.name!r} takes {takes}, not {_FLAGS[budget.kind]} {budget.value:g}",
                              option=budget.kind, detail=detail)

    def run(self, job: PruneJob) -> nn.Module:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def create_pruning_method(name: str) -> PruningMethod:
    """The registered method `name` (UnknownNameError listing the known ones)."""
    return PRUNERS.create(name)


def list_pruning_methods(pattern: str = "*") -> list[str]:
    return PRUNERS.list(pattern)
