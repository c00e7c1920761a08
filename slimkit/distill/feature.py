"""Feature-map distillation (FitNets-style hints): a learnable 1x1 adapter maps the student's feature map to the
teacher's channels (and size), the loss is the mean squared error to the frozen teacher's map."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.errors import DistillError

__all__ = ["FeatureAdapter", "feature_kd_loss"]


class FeatureAdapter(nn.Module):
    """1x1 conv + BN from `student_channels` to `teacher_channels`; resizes to the teacher's spatial size."""

    def __init__(self, student_channels: int, teacher_channels: int) -> None:
        super().__init__()
        if student_channels < 1 or teacher_channels < 1:
            raise DistillError(f"channel counts must be >= 1, got {student_channels} and {teacher_channels}")
        self.proj = nn.Sequential(nn.Conv2d(student_channels, teacher_channels, 1, bias=False),
                                  nn.BatchNorm2d(teacher_channels))

    def forward(self, student_feat: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if student_feat.dim() != 4 or student_feat.shape[1] != self.proj[0].in_channels:
            raise DistillError(f"the adapter expects N x {self.proj[0].in_channels} x H x W student features, got "
                               f"{tuple(student_feat.shape)}; build it with the student's feature channels")
        out = self.proj(student_feat)
        if size is not None and tuple(out.shape[-2:]) != tuple(size):
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out


def feature_kd_loss(student_feat: torch.Tensor, teacher_feat: torch.Tensor, normalize: bool = False) -> torch.Tensor:
    """Mean squared error between (adapted) student and teacher feature maps; `normalize` compares per-sample
    L2-normalised maps instead (scale-free)."""
    if student_feat.shape != teacher_feat.shape:
        raise DistillError(f"feature maps differ: student {tuple(student_feat.shape)} vs teacher "
                           f"{tuple(teacher_feat.shape)}; pass the student's map through a FeatureAdapter first")
    s, t = student_feat, teacher_feat.detach()
    if normalize:
        s, t = F.normalize(s.flatten(1), dim=1), F.normalize(t.flatten(1), dim=1)
    return F.mse_loss(s, t)
