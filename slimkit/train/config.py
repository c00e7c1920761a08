"""Training configuration (a frozen dataclass; YAML files and CLI options fill it in)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from slimkit.errors import ConfigError

__all__ = ["TrainConfig"]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # passes over the training set
    batch_size: int = 128  # global: under torchrun each of N processes takes batch_size / N
    lr: float = 0.1  # peak learning rate (after warm-up)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    momentum: float = 0.9  # SGD momentum (AdamW: beta1 stays at its default)
    nesterov: bool = True  # Nesterov momentum for SGD
    weight_decay: float = 5e-4  # applied to weights only, never to norm parameters or biases
    schedule: Literal["cosine", "step", "constant"] = "cosine"  # learning-rate shape after warm-up
    lr_min: float = 0.0  # where the cosine schedule ends
    lr_per_epoch: bool = False  # the schedule advances once per epoch instead of every step (DARTS)
    milestones: tuple[float, ...] = (0.5, 0.75)  # step schedule: fractions of training where lr *= gamma
    gamma: float = 0.1  # step schedule decay factor
    warmup_epochs: float = 0.0  # linear warm-up from 0 to lr over this many epochs
    label_smoothing: float = 0.0  # for the default cross-entropy loss
    grad_clip: float | None = None  # clip the global gradient norm to this value
    seed: int = 0  # seeds weights' init order, data order, dropout
    eval_every: int = 1  # evaluate on the validation loader every N epochs
    checkpoint_every: int = 1  # write the resumable checkpoint every N epochs
    progress: bool = True  # rich progress bar and summary table

    def __post_init__(self) -> None:
        checks = [
            ("epochs", self.epochs >= 1, f"must be >= 1, got {self.epochs}"),
            ("batch_size", self.batch_size >= 1, f"must be >= 1, got {self.batch_size}"),
            ("lr", math.isfinite(self.lr) and self.lr > 0, f"must be > 0, got {self.lr}"),
            ("optimizer", self.optimizer in ("sgd", "adamw"), f"must be 'sgd' or 'adamw', got {self.optimizer!r}"),
            ("schedule", self.schedule in ("cosine", "step", "constant"),
             f"must be cosine, step or constant, got {self.schedule!r}"),
            ("lr_min", math.isfinite(self.lr_min) and 0 <= self.lr_min <= self.lr,
             f"must be in [0, lr], got {self.lr_min}"),
            ("momentum", 0.0 <= self.momentum < 1.0, f"must be in [0, 1), got {self.momentum}"),
            ("weight_decay", math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"must be >= 0, got {self.weight_decay}"),
            ("label_smoothing", 0.0 <= self.label_smoothing < 1.0, f"must be in [0, 1), got {self.label_smoothing}"),
            ("warmup_epochs", self.warmup_epochs >= 0, f"must be >= 0, got {self.warmup_epochs}"),
            ("milestones", all(0 < m < 1 for m in self.milestones),
             f"are fractions of training in (0, 1), got {self.milestones}"),
            ("grad_clip", self.grad_clip is None or self.grad_clip > 0, f"must be > 0, got {self.grad_clip}"),
            ("eval_every", self.eval_every >= 1, f"must be >= 1, got {self.eval_every}"),
            ("checkpoint_every", self.checkpoint_every >= 1, f"must be >= 1, got {self.checkpoint_every}"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError(f"TrainConfig {name} {rule}", option=name, detail=rule)
