"""DI — discriminant-information channel importance (Kung et al., arXiv 2005.13796).

A layer's channels are judged by how much class-discriminant information their pooled features carry:
DI(F) = tr((S_b + S_w + rho I)^-1 S_b), with S_b / S_w the between- / within-class scatter of the feature vectors
F (one C-vector per image). A channel's score is the DI lost when it alone is removed, computed for all channels at
once from one matrix inverse (the inverse of a principal submatrix follows from the full inverse).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from slimkit.errors import PruneError
from slimkit.graph import Group, Member
from slimkit.prune.importance import ImportanceContext, l1
from slimkit.registry import IMPORTANCES

__all__ = ["scatter_matrices", "discriminant_information", "di_drop_scores", "collect_features", "channel_rows",
           "group_features"]


def scatter_matrices(feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Between-class and within-class scatter (C x C) of N x C features, normalised by N."""
    f = feats.double()
    mu = f.mean(0)
    sb = torch.zeros(f.shape[1], f.shape[1], dtype=f.dtype)
    sw = torch.zeros_like(sb)
    for c in labels.unique():
        fc = f[labels == c]
        d = (fc.mean(0) - mu)[:, None]
        sb += len(fc) * (d @ d.T)
        centred = fc - fc.mean(0)
        sw += centred.T @ centred
    return sb / len(f), sw / len(f)


def discriminant_information(sb: torch.Tensor, sw: torch.Tensor, rho: float) -> torch.Tensor:
    eye = torch.eye(len(sb), dtype=sb.dtype)
    return torch.trace(torch.linalg.solve(sb + sw + rho * eye, sb))


def di_drop_scores(feats: torch.Tensor, labels: torch.Tensor, rho: float | None = None) -> torch.Tensor:
    """DI(all channels) - DI(all but c), for every channel c (higher = the channel matters more)."""
    sb, sw = scatter_matrices(feats, labels)
    st = sb + sw
    rho = float(rho if rho is not None else 1e-3 * torch.trace(st) / len(st) + 1e-12)
    a = torch.linalg.inv(st + rho * torch.eye(len(st), dtype=st.dtype))
    ab = a @ sb
    aba = ab @ a
    d_a, d_b, d_ab, d_aba = a.diagonal(), sb.diagonal(), ab.diagonal(), aba.diagonal()
    full = ab.diagonal().sum()
    # inverse of the principal submatrix without c: A_-c - a a^T / A_cc, with a = A[-c, c]
    trace_sub = full - 2 * d_ab + d_a * d_b
    quad = d_aba - 2 * d_a * d_ab + d_a**2 * d_b
    without_c = trace_sub - quad / d_a
    return (full - without_c).float()


def _pooled(t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 4:
        return t.mean((2, 3))
    if t.dim() == 3:
        return t.mean(1)
    return t


def channel_rows(t: torch.Tensor) -> torch.Tensor:
    """Every spatial position / token as a row of channel values: (N*H*W) x C or (N*L) x C."""
    if t.dim() == 4:
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    return t.reshape(-1, t.shape[-1])


def collect_features(model: nn.Module, modules: set[str], ctx: ImportanceContext,
                     reduce: Callable[[torch.Tensor], torch.Tensor] = _pooled) -> dict[str, torch.Tensor]:
    """Outputs of `modules` over the calibration batches (each reduced by `reduce`), plus `"__labels__"`."""
    feats: dict[str, list[torch.Tensor]] = {m: [] for m in modules}
    labels = []
    handles = [mod.register_forward_hook(lambda _m, _i, out, name=name: feats[name].append(reduce(out.detach())))
               for name, mod in model.named_modules() if name in modules]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in ctx.data:
                model(batch[0])
                labels.append(batch[1])
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    out = {k: torch.cat(v) for k, v in feats.items() if v}
    out["__labels__"] = torch.cat(labels)
    return out


def group_features(group: Group, model: nn.Module, ctx: ImportanceContext,
                   reduce: Callable[[torch.Tensor], torch.Tensor], tag: str
                   ) -> tuple[Member, torch.Tensor, torch.Tensor]:
    """Calibration outputs where a group's channels are read: its normalisation layer, else its producer.
    Returns (that member, features, labels); cached in `ctx.cache` per criterion and layer."""
    norm = [m for m in group.members if m.role == "norm"]
    member = (norm or group.producers)[0]
    key = f"{tag}:{member.module}"
    if key not in ctx.cache:
        got = collect_features(model, {member.module}, ctx, reduce=reduce)
        if member.module not in got:
            raise PruneError(f"{tag}: layer {member.module!r} produced no output on the calibration data")
        ctx.cache[key] = (got[member.module], got["__labels__"])
    return (member, *ctx.cache[key])


@IMPORTANCES.register("di")
def di(group: Group, model: nn.Module, ctx: ImportanceContext | None = None) -> torch.Tensor:
    """Discriminant information lost by removing each channel, from labelled calibration batches (`data=`);
    measured on the output of the group's normalisation layer (else its producing layer). L1 without data."""
    if ctx is None or ctx.data is None:
        return l1(group, model, ctx)
    member, feats, labels = group_features(group, model, ctx, _pooled, "DI")
    if len(labels.unique()) < 2:
        raise PruneError("DI needs calibration batches with at least two classes: pass more or shuffled data")
    return di_drop_scores(feats[:, member.index(group.size)].mean(-1), labels)
