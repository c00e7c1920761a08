"""MiniViT's weight distillation (Zhang et al., CVPR 2022, arXiv 2204.07154): besides the prediction logits, the
student matches relations of the teacher's last transformer layer, MiniLM-style.

- self-attention distillation: per relation head, softmax(Q Q^T / sqrt(d)) and likewise K K^T and V V^T (N x N over
  the tokens), KL(teacher || student);
- hidden-state distillation: the same relation of the last layer's MLP hidden features.

Relations are N x N per head, so the teacher and the student may differ in width (not in token count).
`LastLayerTaps` records what the relations need with forward hooks on the last `*.attn.qkv` and `*.mlp.act` modules
of a ViT-style model; for a multiplexed model (`slimkit.models.multiplex`) the shared modules' last call in a
forward pass is the last layer's, which is the one kept.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.errors import DistillError

__all__ = ["LastLayerTaps", "relation", "relation_kd_loss"]


def relation(x: torch.Tensor, heads: int) -> torch.Tensor:
    """B x N x D features -> B x heads x N x N log-softmax of (X_h X_h^T / sqrt(D / heads)) per head."""
    b, n, d = x.shape
    if d % heads:
        raise DistillError(f"relation: width {d} is not divisible into {heads} relation heads")
    x = x.reshape(b, n, heads, d // heads).transpose(1, 2)
    return torch.log_softmax(x @ x.transpose(-2, -1) / math.sqrt(d // heads), dim=-1)


def relation_kd_loss(student: torch.Tensor, teacher: torch.Tensor, heads: int) -> torch.Tensor:
    """KL(teacher relation || student relation) summed over each row's N entries, averaged over batch, heads, rows."""
    if student.shape[:2] != teacher.shape[:2]:
        raise DistillError(f"relation distillation needs the same batch and token count: student {tuple(student.shape)}"
                           f" vs teacher {tuple(teacher.shape)}")
    s, t = relation(student, heads), relation(teacher.detach(), heads)
    return F.kl_div(s, t, reduction="none", log_target=True).sum(-1).mean()


class LastLayerTaps:
    """The last layer's q, k, v and MLP hidden state of a ViT-style model, refreshed by every forward pass."""

    def __init__(self, model: nn.Module) -> None:
        names = dict(model.named_modules())
        qkv = [n for n in names if n.endswith("attn.qkv")]
        act = [n for n in names if n.endswith("mlp.act")]
        if not qkv or not act:
            raise DistillError(f"{type(model).__name__} has no `attn.qkv` / `mlp.act` modules: relation distillation "
                               "needs a ViT-style model (t2t_vit_*, mini_*, timm deit_* / vit_*)")
        self.qkv_module, self.act_module = names[qkv[-1]], names[act[-1]]
        self.num_heads = int(getattr(names[qkv[-1].rsplit(".", 1)[0]], "num_heads", 1))
        self.qkv: torch.Tensor | None = None
        self.hidden: torch.Tensor | None = None
        self._handles = [self.qkv_module.register_forward_hook(self._keep("qkv")),
                         self.act_module.register_forward_hook(self._keep("hidden"))]

    def _keep(self, attr: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            setattr(self, attr, output)
        return hook

    def qkv_parts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.qkv is None:
            raise DistillError("no forward pass recorded yet: run the model before reading its last layer")
        q, k, v = self.qkv.chunk(3, dim=-1)
        return q, k, v

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
