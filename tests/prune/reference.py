"""An independent dense reference for pruning: the unpruned model with removed channels' consumer columns zeroed.

Removing channel c from a group must give exactly the function of the original model in which every consumer
("in" member) ignores c, and every LayerNorm (or GroupNorm(1)) over the channels computes its statistics over the kept
channels only (a removed channel no longer counts in the statistics). The pruned model is built by slicing; this
reference by masking. They must agree.
"""

import copy

import torch
from torch import nn

from slimkit.prune import PruneConfig, Pruner


class _KeptLayerNorm(nn.Module):
    """nn.LayerNorm whose statistics cover the kept channels only (the others pass through normalised alike)."""

    def __init__(self, ln: nn.LayerNorm, keep: torch.Tensor) -> None:
        super().__init__()
        self.ln, self.keep = ln, keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept = x[..., self.keep]
        mean, var = kept.mean(-1, keepdim=True), kept.var(-1, unbiased=False, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.ln.eps) * self.ln.weight + self.ln.bias


def _mask_layer_norms(ref: nn.Module, mods: dict, dropped: dict[str, set[int]]) -> None:
    for name, drop in dropped.items():
        ln = mods[name]
        keep = torch.tensor(sorted(set(range(ln.normalized_shape[0])) - drop))
        parent, _, attr = name.rpartition(".")
        setattr(mods[parent] if parent else ref, attr, _KeptLayerNorm(ln, keep))


def pruned_and_reference(model: nn.Module, x: torch.Tensor, ratio: float = 0.5, **cfg):
    model = model.eval()
    pruner = Pruner(model, (x,), PruneConfig(ratio=ratio, **cfg))
    pruned = pruner.apply(ratio).eval()
    keep = pruner.step(ratio)
    ref = copy.deepcopy(model)
    mods = dict(ref.named_modules())
    ln_drops: dict[str, set[int]] = {}
    norm_drops: dict[str, set[int]] = {}
    with torch.no_grad():
        for g in pruner.groups:
            drop = sorted(set(range(g.size)) - set(keep[g.id]))
            for m in g.members:
                if m.role == "in" and drop:
                    mods[m.module].weight[:, m.index(g.size)[drop].flatten()] = 0
                if m.role == "norm" and drop and type(mods[m.module]) is nn.LayerNorm:
                    ln_drops.setdefault(m.module, set()).update(m.index(g.size)[drop].flatten().tolist())
                if m.role == "norm" and drop and isinstance(mods[m.module], nn.GroupNorm) and (
                        mods[m.module].num_groups == 1):
                    norm_drops.setdefault(m.module, set()).update(m.index(g.size)[drop].flatten().tolist())
    _mask_layer_norms(ref, mods, ln_drops)
    for name, drop in norm_drops.items():  # statistics over all channels: over the kept ones once pruned
        parent, _, attr = name.rpartition(".")
        norm = mods[name]
        setattr(mods[parent] if parent else ref, attr, _KeptChannelsNorm(norm, drop))
    return pruned, ref, pruner


class _KeptChannelsNorm(nn.Module):
    """GroupNorm(1) computed over the kept channels only (the removed ones output zero): what normalising across
    the channels means once some are gone."""

    def __init__(self, norm: nn.GroupNorm, drop: set[int]):
        super().__init__()
        self.norm = norm
        self.keep = torch.tensor([c for c in range(norm.num_channels) if c not in drop])

    def forward(self, x):
        out = torch.zeros_like(x)
        k, n = self.keep, self.norm
        out[:, k] = nn.functional.group_norm(x[:, k], 1, n.weight[k], n.bias[k], n.eps)
        return out


def assert_prune_matches_reference(model: nn.Module, x: torch.Tensor, ratio: float = 0.5, atol=1e-4, **cfg):
    pruned, ref, pruner = pruned_and_reference(model, x, ratio, **cfg)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), ref(x), atol=atol, rtol=1e-4)
    return pruned, pruner
