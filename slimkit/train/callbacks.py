"""Trainer callbacks: hooks around the loop, with state so a resumed run continues them."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from slimkit.layers.dynamic import DynamicConv2d, annealed_temperature, set_dynamic_temperature

if TYPE_CHECKING:
    from slimkit.train.trainer import Trainer

__all__ = ["Callback", "DynamicTemperature"]


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


class DynamicTemperature(Callback):
    """Anneal the kernel-attention temperature of every DynamicConv2d linearly from `start` to `end` over the first
    `epochs` epochs (the paper: 30 -> 1 over 10 of 300 epochs; default here: a quarter of the run, at most 10), set
    at each epoch start, so a resumed run continues the schedule. The Trainer adds it when the model has dynamic
    convs and no schedule was given."""

    def __init__(self, epochs: int | None = None, start: float = 30.0, end: float = 1.0) -> None:
        self.epochs, self.start, self.end = epochs, start, end

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        span = self.epochs if self.epochs is not None else min(10, math.ceil(trainer.config.epochs / 4))
        set_dynamic_temperature(trainer.model, annealed_temperature(epoch, self.start, self.end, span))

    def on_train_end(self, trainer: Trainer) -> None:
        set_dynamic_temperature(trainer.model, self.end)


def has_dynamic_convs(model: Any) -> bool:
    return any(isinstance(m, DynamicConv2d) for m in model.modules())
