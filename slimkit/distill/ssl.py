"""A teacher-free self-supervised baseline for SEED: SimCLR (Chen et al., ICML 2020).

Two random views of every image go through the student and its projection head; NT-Xent makes each view pick its
partner among the other 2N - 1 embeddings of the batch (cosine similarity / temperature, cross-entropy). The views
are made on the batch tensor (random crop from a zero-padded image, horizontal flip, brightness/contrast jitter),
so any dataset works without a second data pipeline.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.errors import DistillError
from slimkit.train.callbacks import Callback

__all__ = ["SimCLRLoss", "nt_xent_loss", "random_views"]


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Mean over the 2N embeddings of -log softmax(sim / T)[partner], self-similarity excluded."""
    if z1.shape != z2.shape or z1.dim() != 2 or len(z1) < 2:
        raise DistillError(f"NT-Xent needs two N x D views with N >= 2, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise DistillError(f"temperature must be > 0, got {temperature}")
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = len(z1)
    sim = (z @ z.T / temperature).masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, partner)


def random_views(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True,
                 jitter: float = 0.4) -> torch.Tensor:
    """One random view per image of an N x C x H x W batch (crop after zero padding, flip, brightness/contrast)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad,) * 4)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None]).to(x.device)  # N x H
    cols = (dx[:, None] + torch.arange(w)[None]).to(x.device)  # N x W
    idx = torch.arange(n, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    if jitter > 0:
        scale = (1 + jitter * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)).to(x)
        shift = (jitter * (2 * torch.rand(n, 1, 1, 1, generator=generator) - 1)).to(x)
        mean = out.mean((1, 2, 3), keepdim=True)
        out = (out - mean) * scale + mean + shift
    return out


class SimCLRLoss(Callback):
    """Trainer `loss_fn(model, batch)`: NT-Xent between two random views; the view generator is seeded per epoch
    (pass the object in `callbacks=` as well), so a run resumed at an epoch boundary draws the same views."""

    def __init__(self, temperature: float = 0.2, seed: int = 0) -> None:
        self.temperature, self.seed = temperature, seed
        self.generator = torch.Generator().manual_seed(seed)

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.generator.manual_seed(self.seed * 1_000_003 + int(epoch))

    def __call__(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, None]:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        z1, z2 = model(random_views(x, self.generator)), model(random_views(x, self.generator))
        return nt_xent_loss(z1, z2, self.temperature), None  # no class scores: no training accuracy
