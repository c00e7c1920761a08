"""Distillation losses (pure functions) and their adapters to the trainer's `loss_fn(model, batch)` protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.errors import DistillError

__all__ = ["kd_loss", "kd_loss_fn", "virtual_teacher", "tfkd_loss"]


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor | None = None, *,
            temperature: float = 4.0, alpha: float = 0.9) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y).

    The T^2 factor keeps the soft-target gradients on the scale of the hard-target ones as T changes.
    """
    if student_logits.shape != teacher_logits.shape:
        raise DistillError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                           f"{tuple(teacher_logits.shape)} differ: the two models must predict the same classes")
    if temperature <= 0 or not 0.0 <= alpha <= 1.0:
        raise DistillError(f"need temperature > 0 and 0 <= alpha <= 1 (got T={temperature}, alpha={alpha})")
    soft = F.kl_div(F.log_softmax(student_logits / temperature, 1), F.log_softmax(teacher_logits / temperature, 1),
                    reduction="batchmean", log_target=True) * temperature**2
    if targets is None or alpha == 1.0:
        return alpha * soft
    return alpha * soft + (1.0 - alpha) * F.cross_entropy(student_logits, targets)


def virtual_teacher(targets: torch.Tensor, num_classes: int, correct_prob: float = 0.9) -> torch.Tensor:
    """Tf-KD's hand-made teacher (Yuan et al., CVPR 2020): `correct_prob` on the label, the rest spread evenly."""
    if not 0.0 < correct_prob <= 1.0 or num_classes < 2:
        raise DistillError(f"need 0 < correct_prob <= 1 and >= 2 classes (got {correct_prob}, {num_classes})")
    p = torch.full((len(targets), num_classes), (1.0 - correct_prob) / (num_classes - 1))
    return p.scatter(1, targets[:, None].cpu(), correct_prob).to(targets.device)


def tfkd_loss(student_logits: torch.Tensor, targets: torch.Tensor, *, correct_prob: float = 0.9,
              temperature: float = 20.0, alpha: float = 0.1) -> torch.Tensor:
    """Teacher-free KD, virtual-teacher form: (1 - alpha) CE(s, y) + alpha T^2 KL(softmax(v / T) || softmax(s / T)),
    v = `virtual_teacher(y)`. As in the authors' formulation the temperature softens the virtual teacher's
    *probabilities* (a strong label-smoothing regulariser), not logits."""
    v = virtual_teacher(targets, student_logits.shape[1], correct_prob).to(student_logits.dtype)
    soft = F.kl_div(F.log_softmax(student_logits / temperature, 1), F.softmax(v / temperature, 1),
                    reduction="batchmean") * temperature**2
    return (1.0 - alpha) * F.cross_entropy(student_logits, targets) + alpha * soft


def kd_loss_fn(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.9
               ) -> Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]]:
    """`loss_fn(model, batch)` distilling from a frozen `teacher` (eval mode, no gradients)."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch[0], batch[1]
        with torch.no_grad():
            t = teacher(x)
        s = model(x)
        return kd_loss(s, t, y, temperature=temperature, alpha=alpha), s

    return loss_fn
