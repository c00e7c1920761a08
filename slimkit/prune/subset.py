"""Column subset selection (CSS) importance: keep the channels whose outputs span the layer's output best.

The channel-output matrix A (rows = positions of calibration images, columns = channels) is factored by QR with
column pivoting; the pivot order greedily picks the column that adds the most new directions to those already
picked, so the first k pivots are a good k-column subset (the selection CHEX uses, arXiv 2203.15794). A channel's
score is C minus its pivot rank.
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import torch
from torch import nn

from slimkit.graph import Group
from slimkit.prune.discriminant import channel_rows, group_features
from slimkit.prune.importance import ImportanceContext, l1
from slimkit.registry import IMPORTANCES

__all__ = ["pivot_order", "css_scores"]

MAX_ROWS = 4096  # rows sampled from the calibration outputs (QR cost grows with rows x channels^2)


def pivot_order(a: torch.Tensor) -> list[int]:
    """Column indices in the order QR with column pivoting selects them."""
    _, _, piv = scipy.linalg.qr(a.double().numpy(), mode="economic", pivoting=True)
    return [int(i) for i in piv]


def css_scores(a: torch.Tensor) -> torch.Tensor:
    order = pivot_order(a)
    scores = np.empty(len(order))
    scores[order] = np.arange(len(order), 0, -1)
    return torch.from_numpy(scores).float()


@IMPORTANCES.register("css")
def css(group: Group, model: nn.Module, ctx: ImportanceContext | None = None) -> torch.Tensor:
    """Column-subset-selection rank of each channel's output over calibration data (`data=`); L1 without data."""
    if ctx is None or ctx.data is None:
        return l1(group, model, ctx)
    member, rows, _ = group_features(group, model, ctx, channel_rows, "CSS")
    if len(rows) > MAX_ROWS:
        rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(ctx.seed))[:MAX_ROWS]]
    return css_scores(rows[:, member.index(group.size)].mean(-1))
