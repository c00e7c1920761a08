"""Activations from the seed papers: Soft-Root-Sign (trainable alpha, beta) and hard-swish."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SoftRootSign", "HardSwish"]


class SoftRootSign(nn.Module):
    """SRS(x) = x / (x / alpha + exp(-x / beta)) with trainable alpha, beta (Zhou et al., "Soft-Root-Sign").

    Bounded, zero-centred and non-monotonic. With the defaults (alpha=2, beta=3) the denominator stays above 0.89
    for every real x (its minimum is at x = -3 ln 1.5), so the function is smooth everywhere.
    """

    def __init__(self, alpha: float = 2.0, beta: float = 3.0, trainable: bool = True) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.tensor(float(alpha)), requires_grad=trainable)
        self.beta = nn.Parameter(torch.tensor(float(beta)), requires_grad=trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / (x / self.alpha + torch.exp(-x / self.beta))


class HardSwish(nn.Hardswish):
    """x * ReLU6(x + 3) / 6 (MobileNetV3); torch's own, re-exported so blocks can name it here."""
