"""HSIC importance: how strongly a component's output depends on the labels (Hou & Kung, arXiv 2201.00043).

The Hilbert-Schmidt independence criterion between a component's output X (one row per image) and the labels Y,
with the biased estimator HSIC(X, Y) = tr(K H L H) / (n - 1)^2: K a Gaussian kernel on X with the median
pairwise distance as bandwidth (so the score does not depend on the component's scale), L the delta kernel on the
labels (L_ij = 1 when images i and j share a class), H = I - 11^T / n. A component whose output carries no
information about the class scores 0; one that separates the classes scores high.

Components: each channel of a group (an attention head: its D output features; an MLP neuron; a channel), read
where the group's channels are consumed (the input of the output projection, of fc2, of the next convolution),
averaged over tokens / positions; and each token position (`token_hsic`: the hidden state at that position).
Scores come from the labelled calibration batches the pruner receives (`data=`), like Taylor and DI.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from slimkit.errors import PruneError
from slimkit.graph import Group, Member
from slimkit.prune.importance import ImportanceContext, l1
from slimkit.registry import IMPORTANCES

__all__ = ["hsic_scores", "label_kernel", "centred", "consumer_inputs", "run_calibration", "MAX_SAMPLES"]

MAX_SAMPLES = 512  # images used for the n x n kernels (the first ones of the calibration data)


def label_kernel(labels: torch.Tensor) -> torch.Tensor:
    """Delta kernel: 1 where two images share a label."""
    y = labels.flatten()
    return (y[:, None] == y[None, :]).double()


def centred(k: torch.Tensor) -> torch.Tensor:
    """H K H with H = I - 11^T / n (double-centring)."""
    return k - k.mean(0, keepdim=True) - k.mean(1, keepdim=True) + k.mean()


def _gaussian_kernels(x: torch.Tensor) -> torch.Tensor:
    """x: n x m x d (m components of d features) -> m x n x n Gaussian kernels, bandwidth = median distance."""
    x = x.double().transpose(0, 1)  # m x n x d
    d2 = torch.cdist(x, x).pow(2)  # m x n x n
    n = x.shape[1]
    iu = torch.triu_indices(n, n, 1)
    sigma2 = d2[:, iu[0], iu[1]].sqrt().median(dim=1).values.pow(2)  # per component
    sigma2 = torch.where(sigma2 > 0, sigma2, torch.ones_like(sigma2))
    return torch.exp(-d2 / (2 * sigma2[:, None, None]))


@torch.no_grad()
def hsic_scores(feats: torch.Tensor, labels: torch.Tensor, chunk: int = 32) -> torch.Tensor:
    """HSIC(X_c, Y) for every component c of feats (n x m x d, or n x m for one feature each), float tensor [m]."""
    if feats.dim() == 2:
        feats = feats.unsqueeze(-1)
    n = feats.shape[0]
    if n < 3 or len(labels.unique()) < 2:
        raise PruneError("HSIC needs calibration batches with at least 3 images of at least two classes: pass "
                         "more (or shuffled) data=[(x, y), ...]")
    lc = centred(label_kernel(labels))
    out = [(_gaussian_kernels(feats[:, i: i + chunk]) * lc).sum((1, 2)) / (n - 1) ** 2
           for i in range(0, feats.shape[1], chunk)]
    return torch.cat(out).float()


def _pool(t: torch.Tensor, channel_dim: int) -> torch.Tensor:
    """One row of channels per image: average every other dimension but the batch."""
    t = t.movedim(channel_dim, -1)
    return t.reshape(t.shape[0], -1, t.shape[-1]).mean(1) if t.dim() > 2 else t


def run_calibration(model: nn.Module, data: Iterable[Any], handles: list[Any]) -> torch.Tensor:
    """Run the model (eval, no grad) on the calibration batches, at most MAX_SAMPLES images, for the hooks in
    `handles` (removed afterwards); the labels seen."""
    labels, seen = [], 0
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in data:
                if seen >= MAX_SAMPLES:
                    break
                model(batch[0])
                labels.append(batch[1])
                seen += len(batch[1])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    if not labels:
        raise PruneError("no calibration batches: pass labelled data=[(x, y), ...]")
    return torch.cat(labels)[:MAX_SAMPLES]


def consumer_inputs(model: nn.Module, modules: set[str], ctx: ImportanceContext) -> dict[str, torch.Tensor]:
    """The inputs of `modules` (pooled to n x C_in) over the calibration batches, plus `"__labels__"`; cached."""
    todo = {m for m in modules if f"hsic_in:{m}" not in ctx.cache}
    if todo:
        feats: dict[str, list[torch.Tensor]] = {m: [] for m in todo}

        def hook(name: str, mod: nn.Module):
            dim = 1 if isinstance(mod, nn.Conv2d) else -1
            return lambda _m, args: feats[name].append(_pool(args[0].detach(), dim))

        handles = [mod.register_forward_pre_hook(hook(n, mod)) for n, mod in model.named_modules() if n in todo]
        labels = run_calibration(model, ctx.data, handles)
        ctx.cache["hsic_labels"] = labels
        for m, v in feats.items():
            if not v:
                raise PruneError(f"hsic: layer {m!r} received no input on the calibration data")
            ctx.cache[f"hsic_in:{m}"] = torch.cat(v)[:MAX_SAMPLES]
    return {**{m: ctx.cache[f"hsic_in:{m}"] for m in modules}, "__labels__": ctx.cache["hsic_labels"]}


def _reader(group: Group, model: nn.Module) -> Member | None:
    """Where the group's channels are consumed: the first Linear / Conv2d reading them as input columns."""
    mods = dict(model.named_modules())
    for m in group.members:
        mod = mods[m.module]
        if m.role == "in" and (isinstance(mod, nn.Linear) or (isinstance(mod, nn.Conv2d) and mod.groups == 1)):
            return m
    return None


@IMPORTANCES.register("hsic")
def hsic(group: Group, model: nn.Module, ctx: ImportanceContext | None = None) -> torch.Tensor:
    """HSIC between each channel's output (a head's features, a neuron) and the labels, from labelled calibration
    batches (`data=`); read at the layer that consumes the channels. L1 without data or without such a layer."""
    if ctx is None or ctx.data is None:
        return l1(group, model, ctx)
    member = _reader(group, model)
    if member is None:
        return l1(group, model, ctx)
    got = consumer_inputs(model, {member.module}, ctx)
    x = got[member.module]  # n x C_in
    idx = member.index(group.size)  # size x (tile * repeat)
    return hsic_scores(x[:, idx.flatten()].reshape(len(x), group.size, -1), got["__labels__"])
