"""Channel importance criteria: pure functions `score(group, model, ctx) -> Tensor[group.size]` (higher = keep).

Each criterion scores every member of a group (all coupled parameter slices), normalises each member's scores by
their mean, and averages over members, so a channel is judged by everything it touches (as in DepGraph).
Data-driven criteria read calibration statistics from `ctx` (see `ImportanceContext`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from slimkit.errors import PruneError
from slimkit.graph import Group, Member
from slimkit.graph.params import parse_param_role
from slimkit.registry import IMPORTANCES

__all__ = ["ImportanceContext", "member_slices", "create_importance", "list_importances"]


@dataclass
class ImportanceContext:
    """What data-driven criteria may use: calibration batches, the loss, and gradients/activations they collect."""

    data: Any = None  # an iterable of (x, y) batches
    loss_fn: Callable[[nn.Module, Any], Any] | None = None
    seed: int = 0
    cache: dict[str, Any] = field(default_factory=dict)


def _param_slices(mod: nn.Module, m: Member, size: int, tensor: str = "weight") -> list[torch.Tensor]:
    """The slices of `mod`'s tensor belonging to channel c, stacked along dim 0 (size x ...)."""
    idx = m.index(size)  # size x (tile * repeat)
    param = parse_param_role(m.role)
    if param is not None:  # a layer scale / embedding: scored by its own values (never its bias or gradient)
        p = getattr(mod, param[0], None) if tensor == "weight" else None
        if not isinstance(p, torch.Tensor):
            return []
        return [p.movedim(param[1], 0).index_select(0, idx.flatten()).reshape(size, -1)]
    w = getattr(mod, tensor, None)
    if not isinstance(w, torch.Tensor) or m.role == "heads" or m.role.startswith(("attr:", "sizes:")):
        return []
    if m.role in ("out", "dw", "norm"):
        return [w.index_select(0, idx.flatten()).reshape(size, -1)]
    cols = w.index_select(1, idx.flatten()).reshape(w.shape[0], size, idx.shape[1], *w.shape[2:]).transpose(0, 1)
    return [cols.reshape(size, -1)]


def member_slices(model: nn.Module, group: Group, tensor: str = "weight") -> list[torch.Tensor]:
    """Per member, a (group.size x k) matrix of that member's parameters of each channel."""
    mods = dict(model.named_modules())
    out = []
    for m in group.members:
        out += _param_slices(mods[m.module], m, group.size, tensor)
    return out


def _reduce(per_member: list[torch.Tensor]) -> torch.Tensor:
    scores = [s / (s.mean() + 1e-12) for s in per_member if s.numel()]
    return torch.stack(scores).mean(0) if scores else torch.zeros(0)


@torch.no_grad()
def _norm(model: nn.Module, group: Group, p: int) -> torch.Tensor:
    return _reduce([s.detach().abs().pow(p).sum(1).pow(1.0 / p) for s in member_slices(model, group)])


@IMPORTANCES.register("l1")
def l1(group: Group, model: nn.Module, ctx: ImportanceContext | None = None) -> torch.Tensor:
    """Sum of absolute weights of the channel across all coupled layers (Li et al., 2017, group-wise)."""
    return _norm(model, group, 1)


@IMPORTANCES.register("l2")
def l2(group: Group, model: nn.Module, ctx: ImportanceContext | None = None) -> torch.Tensor:
    """Euclidean norm of the channel's weights across all coupled layers."""
    return _norm(model, group, 2)


@IMPORTANCES.register("random")
def random(group: Group, model: nn.Module, ctx: ImportanceContext | None = None) -> torch.Tensor:
    """Uniform random scores (a baseline), seeded by the context seed and the group id."""
    g = torch.Generator().manual_seed((ctx.seed if ctx else 0) * 7919 + group.id)
    return torch.rand(group.size, generator=g)


@IMPORTANCES.register("bn_scale")
@torch.no_grad()
def bn_scale(group: Group, model: nn.Module, ctx: ImportanceContext | None = None) -> torch.Tensor:
    """|gamma| of the coupled BatchNorm layers (network slimming); falls back to L1 where there is none."""
    mods = dict(model.named_modules())
    norms = [m for m in group.members if m.role == "norm"
             and isinstance(mods[m.module], nn.modules.batchnorm._BatchNorm) and mods[m.module].weight is not None]
    if not norms:
        return l1(group, model, ctx)
    return _reduce([mods[m.module].weight[m.index(group.size)].abs().sum(1) for m in norms])


@IMPORTANCES.register("fpgm")
@torch.no_grad()
def fpgm(group: Group, model: nn.Module, ctx: ImportanceContext | None = None) -> torch.Tensor:
    """Filter pruning via geometric median (He et al., 2019): distance of each producer filter to all others;
    filters close to the geometric median are redundant."""
    mods = dict(model.named_modules())
    per = []
    for m in group.producers:
        w = _param_slices(mods[m.module], m, group.size)[0].detach()
        per.append(torch.cdist(w[None], w[None])[0].sum(1))
    return _reduce(per)


@IMPORTANCES.register("taylor")
def taylor(group: Group, model: nn.Module, ctx: ImportanceContext | None = None) -> torch.Tensor:
    """First-order Taylor importance of each channel (Molchanov et al., 2019, group form): the loss change from
    removing the channel's parameters S, (sum_{s in S} w_s * dL/dw_s)^2, computed on each calibration batch and
    averaged over batches (summing the gradients first would let batches cancel: at a trained model the mean
    gradient is close to zero); square-rooted so scores keep the scale of the other criteria. One gradient copy
    per batch is kept while scoring. Falls back to L1 when no data is given."""
    if ctx is None or ctx.data is None:
        return l1(group, model, ctx)
    if "taylor_grads" not in ctx.cache:
        ctx.cache["taylor_grads"] = _batch_grads(model, ctx)
    batches = ctx.cache["taylor_grads"]
    mods = dict(model.named_modules())
    per = []
    for m in group.members:
        mod = mods[m.module]
        if getattr(mod, "weight", None) is None or m.role.startswith("param:") or m.module not in batches[0]:
            continue
        w = _param_slices(mod, m, group.size)[0].detach()
        sq = sum((w * _param_slices(_Holder(g[m.module]), m, group.size)[0]).sum(1) ** 2 for g in batches)
        per.append((sq / len(batches)).sqrt())
    return _reduce(per)


class _Holder:
    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight


def _batch_grads(model: nn.Module, ctx: ImportanceContext) -> list[dict[str, torch.Tensor]]:
    """Per calibration batch: the gradient of the loss with respect to every module's `weight`."""
    was = model.training
    model.eval()
    loss_fn = ctx.loss_fn or (lambda net, b: (nn.functional.cross_entropy(net(b[0]), b[1]), None))
    out = []
    for batch in ctx.data:
        model.zero_grad(set_to_none=True)
        loss_fn(model, batch)[0].backward()
        out.append({n: m.weight.grad.detach().clone() for n, m in model.named_modules()
                    if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.grad is not None})
    model.zero_grad(set_to_none=True)
    model.train(was)
    if not out:
        raise PruneError("taylor importance got no calibration batches: pass data=[(x, y), ...]")
    return out


def create_importance(name: str) -> Callable[..., torch.Tensor]:
    return IMPORTANCES.get(name)


def list_importances() -> list[str]:
    return IMPORTANCES.list()
