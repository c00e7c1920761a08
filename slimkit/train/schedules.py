"""Learning-rate schedules as pure functions of the step."""

from __future__ import annotations

import math

from slimkit.train.config import TrainConfig

__all__ = ["lr_at"]


def lr_at(step: int, total_steps: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based) of `total_steps`: linear warm-up, then the schedule, which
    advances every step, or once per epoch with `lr_per_epoch` (DARTS' cosine); the cosine ends at `lr_min`."""
    warm = int(round(cfg.warmup_epochs * steps_per_epoch))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.lr_per_epoch:
        t = ((step - warm) // steps_per_epoch) / max(1, (total_steps - warm) // steps_per_epoch)
    else:
        t = (step - warm) / max(1, total_steps - warm)
    if cfg.schedule == "cosine":
        return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1.0 + math.cos(math.pi * t))
    return cfg.lr * cfg.gamma ** sum(t >= m for m in cfg.milestones)
