"""Trainer callbacks: hooks around the loop, with state so a resumed run continues them.

A module that needs a callback to train (Dynamic Convolution's annealed temperature) says so once, with
`@needed_by(ModuleType)` on the callback class; the Trainer adds one for every such module type in the model unless
the caller passed a callback of that class. A user's own layer declares its callback the same way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from torch import nn

from slimkit.layers.dynamic import DynamicConv2d, annealed_temperature, set_dynamic_temperature

if TYPE_CHECKING:
    from slimkit.train.trainer import Trainer

__all__ = ["Callback", "DynamicTemperature", "callbacks_needed", "needed_by"]


class Callback:
    """Override what you need. `on_batch_end` runs after the optimizer step."""

    def on_train_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None: ...

    def on_batch_end(self, trainer: Trainer, step: int, loss: float) -> None: ...

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


C = TypeVar("C", bound=type)
_NEEDED: dict[type, type] = {}  # module type -> the callback class a model holding it trains with


def needed_by(*module_types: type) -> Callable[[C], C]:
    """Class decorator for a `Callback`: a model holding any of `module_types` trains with it."""

    def deco(cls: C) -> C:
        for t in module_types:
            _NEEDED[t] = cls
        return cls

    return deco


def callbacks_needed(model: nn.Module, given: Iterable[Callback]) -> list[Callback]:
    """One instance of each callback class the model's modules declared (`needed_by`) and `given` lacks."""
    present = {type(m) for m in model.modules()}
    out: list[Callback] = []
    for module_type, cls in _NEEDED.items():
        have = [*given, *out]
        if any(issubclass(p, module_type) for p in present) and not any(isinstance(cb, cls) for cb in have):
            out.append(cls())
    return out


@needed_by(DynamicConv2d)
class DynamicTemperature(Callback):
    """Anneal the kernel-attention temperature of every DynamicConv2d linearly from `start` to `end` over the first
    `epochs` epochs (the paper: 30 -> 1 over 10 of 300 epochs; default here: a quarter of the run, at most 10), set
    at each epoch start, so a resumed run continues the schedule. DynamicConv2d declares it (`needed_by`): the
    Trainer adds one when the model has dynamic convs and no schedule was given."""

    def __init__(self, epochs: int | None = None, start: float = 30.0, end: float = 1.0) -> None:
        self.epochs, self.start, self.end = epochs, start, end

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        span = self.epochs if self.epochs is not None else min(10, math.ceil(trainer.config.epochs / 4))
        set_dynamic_temperature(trainer.model, annealed_temperature(epoch, self.start, self.end, span))

    def on_train_end(self, trainer: Trainer) -> None:
        set_dynamic_temperature(trainer.model, self.end)
