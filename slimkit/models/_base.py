"""The interface every slimkit model follows (timm's): features, head, classifier."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ClassifierMixin"]


class ClassifierMixin:
    """forward = forward_head(forward_features(x)). Subclasses set `self.head` (final layer), `num_features`,
    `num_classes`, and implement `forward_features`; the head pools globally, then applies dropout and `head`."""

    head: nn.Module
    num_features: int
    num_classes: int
    drop_rate: float = 0.0

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if x.dim() == 4:
            x = x.mean(dim=(2, 3))
        if pre_logits:
            return x
        if self.drop_rate and self.training:  # type: ignore[attr-defined]
            x = nn.functional.dropout(x, self.drop_rate, True)
        return self.head(x)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]
