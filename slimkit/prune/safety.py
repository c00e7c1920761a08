"""The safety net: a pruned model is run before it is returned, and groups that break it are kept whole.

The dependency graph is built to see every coupling, but a model can always hold one it misses (a channel count
baked into a constant, a custom layer). So every pruned copy is run on the example inputs and its output shapes are
compared with the original's. If it fails, the groups responsible are found by adaptive group testing: prune only
half of the pruned groups, recurse into the halves that fail, down to single groups (about b * log2(n) trial builds
for b culprits among n groups). A set that fails while neither half does (two groups that only break together) is
kept whole as a set. The pruner then keeps the culprits whole, says so, and prunes the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from slimkit.graph import Group
from slimkit.prune.validate import output_shapes

__all__ = ["failure", "find_culprits"]


def failure(model: nn.Module | None, inputs: tuple[torch.Tensor, ...], reference: Any) -> str | None:
    """Why `model` is not a valid pruned model (it fails on the inputs, or its output shapes differ from
    `reference`); None when it runs and matches."""
    if model is None:
        return "surgery failed"
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            got = output_shapes(model(*inputs))
    except Exception as e:  # noqa: BLE001 - any failure of the pruned model is the engine's
        text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        return f"{type(e).__name__}: {text}"
    finally:
        model.train(was)
    if got != reference:
        return f"output shapes {got} instead of {reference}"
    return None


def find_culprits(groups: Sequence[Group], breaks: Callable[[Sequence[Group]], bool]) -> list[Group]:
    """The groups whose pruning breaks the model, given that pruning all of `groups` does. `breaks(subset)` builds
    the model with only `subset` pruned and says whether it fails."""

    def search(subset: Sequence[Group], known_bad: bool) -> list[Group]:
        if not known_bad and not breaks(subset):
            return []
        if len(subset) == 1:
            return list(subset)
        half = len(subset) // 2
        bad = search(subset[:half], False) + search(subset[half:], False)
        return bad or list(subset)  # only the combination fails: keep the combination whole

    return search(list(groups), True) if groups else []
