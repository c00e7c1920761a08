"""Evaluation and the default loss (pure functions)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sized
from typing import Any

import torch
from rich.console import Console
from rich.progress import track
from torch import nn

__all__ = ["cross_entropy_loss", "evaluate", "LossFn"]

LossFn = Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy_loss(label_smoothing: float = 0.0) -> LossFn:
    """`loss_fn(model, batch) -> (loss, logits)` with cross-entropy on `batch[1]`."""

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(batch[0])
        return nn.functional.cross_entropy(logits, batch[1], label_smoothing=label_smoothing), logits

    return loss_fn


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[Any], loss_fn: LossFn | None = None, progress: str | None = None
             ) -> dict[str, float]:
    """Mean loss and top-1 accuracy over `loader` (model put in eval mode, then restored). With `progress` (a
    description), a transient progress bar shows on stderr while it runs."""
    loss_fn = loss_fn or cross_entropy_loss()
    was = model.training
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    if progress is not None:
        total_batches = len(loader) if isinstance(loader, Sized) else None
        loader = track(loader, description=progress, total=total_batches, transient=True,
                       console=Console(stderr=True))
    try:
        for batch in loader:
            loss, logits = loss_fn(model, batch)
            n = len(batch[1])
            total += n
            loss_sum += float(loss) * n
            correct += int((logits.argmax(1) == batch[1]).sum())
    finally:
        model.train(was)
    return {"loss": loss_sum / max(total, 1), "acc": correct / max(total, 1), "n": total}
