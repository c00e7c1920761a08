"""ProxylessKD (Shi et al., arXiv:2011.00265): the student inherits the teacher's classifier, frozen, and trains its
embedding through it with the task loss, so the student's embedding lands directly in the teacher's embedding space.

`kind="softmax"` uses the classifier as is (logits = W e + b); the margin variants normalise embedding and weights
and apply an additive angular (`arcface`, cos(theta + m)) or cosine (`cosface`, cos(theta) - m) margin to the target
class before scaling by `scale`, as in face recognition.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.errors import DistillError

__all__ = ["proxyless_kd_loss", "teacher_classifier"]


def teacher_classifier(teacher: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The teacher's final linear layer (weight, bias), detached: what the student inherits."""
    head = teacher.get_classifier() if hasattr(teacher, "get_classifier") else None
    if not isinstance(head, nn.Linear):
        raise DistillError("ProxylessKD needs a teacher whose get_classifier() is an nn.Linear (slimkit and timm "
                           f"models have one); got {type(head).__name__}")
    return head.weight.detach(), None if head.bias is None else head.bias.detach()


def proxyless_kd_loss(student_embedding: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                      bias: torch.Tensor | None = None, kind: str = "softmax", margin: float = 0.0,
                      scale: float = 30.0) -> torch.Tensor:
    """Cross-entropy of the student's embedding through the teacher's frozen classifier (optionally with a margin)."""
    if student_embedding.dim() != 2 or student_embedding.shape[1] != weight.shape[1]:
        raise DistillError(f"student embedding {tuple(student_embedding.shape)} does not fit the teacher classifier "
                           f"{tuple(weight.shape)}: the student's num_features must equal the teacher's "
                           f"({weight.shape[1]}); add a projection layer to the student")
    w = weight.detach()
    if kind == "softmax":
        return F.cross_entropy(F.linear(student_embedding, w, None if bias is None else bias.detach()), targets)
    if kind not in ("arcface", "cosface"):
        raise DistillError(f"kind must be softmax, arcface or cosface, got {kind!r}")
    cos = F.linear(F.normalize(student_embedding, dim=1), F.normalize(w, dim=1)).clamp(-1 + 1e-7, 1 - 1e-7)
    onehot = F.one_hot(targets, w.shape[0]).to(cos.dtype)
    target_cos = torch.cos(torch.acos(cos) + margin) if kind == "arcface" else cos - margin
    return F.cross_entropy(scale * (onehot * target_cos + (1 - onehot) * cos), targets)
