"""The interface every slimkit model follows (timm's): features, head, classifier."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ClassifierMixin", "init_mobile_weights", "init_vit_weights"]


class ClassifierMixin:
    """forward = forward_head(forward_features(x)) for convolutional models.

    Subclasses set `head` (final layer), `head_drop` (dropout before it), `num_features`, `num_classes` and implement
    `forward_features` returning an N x C x H x W map; the head averages it globally. No data-dependent Python
    control flow, so the model traces with torch.fx (which the pruning engine relies on).
    """

    head: nn.Module
    head_drop: nn.Module
    num_features: int
    num_classes: int

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.head(self.head_drop(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]


def init_mobile_weights(model: nn.Module) -> None:
    """The MobileNet family's init: convs Kaiming-normal (fan-out), linears N(0, 0.01) with zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def init_vit_weights(model: nn.Module) -> None:
    """The transformer families' init: linears truncated-normal (std 0.02) with zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
