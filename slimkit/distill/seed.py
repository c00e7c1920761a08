"""SEED: self-supervised distillation (Fang et al., "SEED: Self-supervised Distillation for Visual
Representation", ICLR 2021). No labels: a frozen teacher embeds each image; a FIFO queue keeps the teacher
embeddings of past batches. For image i with L2-normalised teacher embedding t_i and student embedding s_i, both
models score the anchors [t_i, queue]: p_T = softmax(t_i . anchors / tau_T), p_S = softmax(s_i . anchors / tau_S),
and the student minimises the cross-entropy -sum p_T log p_S. The batch's teacher embeddings then enter the queue.
"""

from __future__ import annotations

import base64
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.errors import DistillError
from slimkit.train.callbacks import Callback

__all__ = ["EmbeddingQueue", "SeedLoss", "SeedStudent", "seed_loss"]


class EmbeddingQueue:
    """A fixed-size FIFO of embeddings (oldest first); `state_dict` for resume."""

    def __init__(self, size: int, dim: int) -> None:
        if size < 1 or dim < 1:
            raise DistillError(f"queue size and dim must be >= 1, got {size} and {dim}")
        self.size, self.dim = size, dim
        self.buffer = torch.empty(0, dim)

    def enqueue(self, z: torch.Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise DistillError(f"queue holds {self.dim}-dim embeddings, got {tuple(z.shape)}")
        self.buffer = torch.cat([self.buffer.to(z.device), z.detach()])[-self.size:]

    def content(self) -> torch.Tensor:
        return self.buffer

    def __len__(self) -> int:
        return len(self.buffer)

    def state_dict(self) -> dict[str, Any]:
        return {"buffer": self.buffer.cpu(), "size": self.size, "dim": self.dim}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.size, self.dim, self.buffer = int(state["size"]), int(state["dim"]), state["buffer"]


def seed_loss(student_z: torch.Tensor, teacher_z: torch.Tensor, queue: torch.Tensor,
              t_student: float = 0.2, t_teacher: float = 0.07) -> torch.Tensor:
    """Cross-entropy between the teacher's and the student's similarity distributions over [own teacher embedding,
    queue]; embeddings are L2-normalised here."""
    if student_z.shape != teacher_z.shape:
        raise DistillError(f"student and teacher embeddings differ: {tuple(student_z.shape)} vs "
                           f"{tuple(teacher_z.shape)}; give the student a projection head to the teacher's width")
    if t_student <= 0 or t_teacher <= 0:
        raise DistillError(f"temperatures must be > 0, got {t_student} and {t_teacher}")
    s, t = F.normalize(student_z, dim=1), F.normalize(teacher_z.detach(), dim=1)
    q = F.normalize(queue.detach().to(t), dim=1) if len(queue) else t.new_zeros(0, t.shape[1])
    own_s, own_t = (s * t).sum(1, keepdim=True), (t * t).sum(1, keepdim=True)
    logits_s = torch.cat([own_s, s @ q.T], 1) / t_student
    logits_t = torch.cat([own_t, t @ q.T], 1) / t_teacher
    return -(F.softmax(logits_t, 1) * F.log_softmax(logits_s, 1)).sum(1).mean()


class SeedStudent(nn.Module):
    """A backbone (slimkit interface) plus an MLP projection head to the teacher's embedding width."""

    def __init__(self, backbone: nn.Module, out_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        d = int(backbone.num_features)
        hidden = hidden or max(d, out_dim)
        self.head = nn.Sequential(nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features (what a linear probe evaluates)."""
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


class SeedLoss(Callback):
    """Trainer `loss_fn(model, batch)` for SEED: embeds with the frozen teacher, scores, then enqueues.

    Pass it also in `callbacks=` so a checkpoint keeps the queue (a resumed run scores against the same anchors).
    Batches may carry labels; they are ignored.
    """

    def __init__(self, teacher: nn.Module, queue_size: int = 4096, t_student: float = 0.2,
                 t_teacher: float = 0.07) -> None:
        teacher.eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        self.teacher, self.t_student, self.t_teacher = teacher, t_student, t_teacher
        self.queue: EmbeddingQueue | None = None
        self.queue_size = queue_size

    def teacher_embed(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = self.teacher
            return t.forward_head(t.forward_features(x), pre_logits=True) if hasattr(t, "forward_head") else t(x)

    def __call__(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, None]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        t = self.teacher_embed(x)
        if self.queue is None:
            self.queue = EmbeddingQueue(self.queue_size, t.shape[1])
        s = model(x)
        loss = seed_loss(s, t, self.queue.content(), self.t_student, self.t_teacher)
        self.queue.enqueue(F.normalize(t, dim=1))
        return loss, None  # no class scores: the trainer reports no accuracy

    def state_dict(self) -> dict[str, Any]:
        if self.queue is None:
            return {}
        buf = self.queue.content().detach().float().cpu().contiguous()
        return {"size": self.queue.size, "dim": self.queue.dim, "rows": len(buf),
                "buffer": base64.b64encode(buf.numpy().tobytes()).decode("ascii")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not state:
            return
        raw = bytearray(base64.b64decode(state["buffer"]))
        buf = torch.frombuffer(raw, dtype=torch.float32).reshape(int(state["rows"]), int(state["dim"]))
        self.queue = EmbeddingQueue(int(state["size"]), int(state["dim"]))
        self.queue.buffer = buf.clone()
