"""The dimensions a transformer is pruned along, and which channel groups belong to which (pure functions).

- "heads": attention heads (a group with a head-count member): whole heads leave q, k, v, the output projection,
  per-head tables (relative-position biases, logit scales) and the module's `num_heads`.
- "neurons": channels produced by one layer and consumed inside its block (an MLP's hidden neurons, a convolution's
  inner channels).
- "embed": channels that several layers write into (the residual stream: patch embedding, every block's output
  projections, LayerNorms, position embeddings and class tokens).
- "tokens": the sequence length (`slimkit.prune.tokens`): not a channel group.

Multi-dimensional pruning (Hou & Kung, arXiv 2201.00043) removes a chosen share of each of heads, neurons and
tokens; slimkit also offers "embed".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from slimkit.errors import ConfigError
from slimkit.graph import Group

__all__ = ["CHANNEL_DIMS", "DIMENSIONS", "group_dimension", "check_dims", "dim_ratio_of_groups"]

CHANNEL_DIMS = ("heads", "neurons", "embed")
DIMENSIONS = (*CHANNEL_DIMS, "tokens")


def group_dimension(group: Group) -> str:
    """Which dimension a channel group is (see the module docstring)."""
    if any(m.role == "heads" for m in group.members):
        return "heads"
    if len(group.producers) >= 2 or any(m.role.startswith("param:") for m in group.members):
        return "embed"
    return "neurons"


def check_dims(dims: Sequence[str] | Mapping[str, float], what: str = "dims") -> None:
    unknown = [d for d in dims if d not in DIMENSIONS]
    if unknown:
        detail = f"names unknown dimensions {unknown}; choose from {list(DIMENSIONS)}"
        raise ConfigError(f"{what} {detail}", option=what, detail=detail)
    if isinstance(dims, Mapping):
        bad = {d: r for d, r in dims.items() if not (isinstance(r, (int, float)) and 0.0 <= r < 1.0)}
        if bad or any(math.isnan(float(r)) for r in dims.values()):
            detail = f"takes shares to remove, each in [0, 1); got {bad}"
            raise ConfigError(f"{what} {detail}", option=what, detail=detail)


def dim_ratio_of_groups(groups: Sequence[Group], ratios: Mapping[str, float]) -> dict[int, float]:
    """The pruning ratio of every group: its dimension's (0 for a dimension not listed)."""
    return {g.id: float(ratios.get(group_dimension(g), 0.0)) for g in groups}
