"""An independent dense reference for pruning: the unpruned model with removed channels' consumer columns zeroed.

Removing channel c from a group must give exactly the function of the original model in which every consumer
("in" member) ignores c. The pruned model is built by slicing; this reference by masking. They must agree.
"""

import copy

import torch
from torch import nn

from slimkit.prune import PruneConfig, Pruner


def pruned_and_reference(model: nn.Module, x: torch.Tensor, ratio: float = 0.5, **cfg):
    model = model.eval()
    pruner = Pruner(model, (x,), PruneConfig(ratio=ratio, **cfg))
    pruned = pruner.apply(ratio).eval()
    keep = pruner.step(ratio)
    ref = copy.deepcopy(model)
    mods = dict(ref.named_modules())
    with torch.no_grad():
        for g in pruner.groups:
            drop = sorted(set(range(g.size)) - set(keep[g.id]))
            for m in g.members:
                if m.role == "in" and drop:
                    mods[m.module].weight[:, m.index(g.size)[drop].flatten()] = 0
    return pruned, ref, pruner


def assert_prune_matches_reference(model: nn.Module, x: torch.Tensor, ratio: float = 0.5, atol=1e-4, **cfg):
    pruned, ref, pruner = pruned_and_reference(model, x, ratio, **cfg)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), ref(x), atol=atol, rtol=1e-4)
    return pruned, pruner
