"""The dimensions a transformer is pruned along, which channel groups belong to which (pure functions), and the
checks that names, shares and a model's own dimensions agree, made before any pruning work (`model_dimensions`
reads a model: one trace, one forward pass).

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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from torch import nn

from slimkit.errors import ConfigError
from slimkit.graph import Group, build_dependency_graph
from slimkit.prune.tokens import token_stack_or_why

__all__ = ["CHANNEL_DIMS", "DIMENSIONS", "group_dimension", "check_dims", "check_dims_agree", "check_ratios",
           "dim_ratio_of_groups", "model_dimensions", "require_dims"]

CHANNEL_DIMS = ("heads", "neurons", "embed")
DIMENSIONS = (*CHANNEL_DIMS, "tokens")


def group_dimension(group: Group) -> str:
    """Which dimension a channel group is (see the module docstring)."""
    if any(m.role == "heads" for m in group.members):
        return "heads"
    if len(group.producers) >= 2 or any(m.role.startswith("param:") for m in group.members):
        return "embed"
    return "neurons"


def _bad(what: str, detail: str) -> ConfigError:
    return ConfigError.for_option(what, detail)


def check_dims(dims: Sequence[str], what: str = "dims") -> None:
    """`dims`: a non-empty sequence of known dimension names. ConfigError naming the bad entry and the fix; `what`
    is the argument's name (the CLI shows its flag)."""
    if isinstance(dims, (str, bytes, Mapping)) or not isinstance(dims, Sequence):
        raise _bad(what, f"takes names of dimensions from {list(DIMENSIONS)}, e.g. ('heads', 'neurons'); got "
                         f"{dims!r}")
    _check_names(dims, what)


def check_ratios(ratios: Mapping[str, float], what: str = "ratios") -> None:
    """`ratios`: a non-empty mapping of known dimension names to shares to remove, numbers in [0, 1)."""
    if not isinstance(ratios, Mapping):
        raise _bad(what, f"takes a mapping of dimension names to shares to remove, e.g. {{'heads': 0.3}}; got "
                         f"{ratios!r}")
    _check_names(ratios, what)
    for d, r in ratios.items():
        if isinstance(r, bool) or not isinstance(r, (int, float)):
            raise _bad(what, f"takes shares to remove, numbers in [0, 1): {d} {r!r} is not a number (e.g. {d}=0.3)")
        if not (math.isfinite(r) and 0.0 <= r < 1.0):
            raise _bad(what, f"takes shares to remove, in [0, 1): {d} {r} is outside (0.3 removes 30% of the {d}; 1 "
                             "would remove them all)")


def _check_names(names: Sequence[str] | Mapping[str, float], what: str) -> None:
    if not names:
        raise _bad(what, f"is empty: name at least one dimension from {list(DIMENSIONS)} (or leave it out)")
    unknown = [d for d in names if d not in DIMENSIONS]
    if unknown:
        raise _bad(what, f"names unknown dimensions {unknown}; choose from {list(DIMENSIONS)}")


def check_dims_agree(dims: Sequence[str] | None, ratios: Mapping[str, float] | None) -> None:
    """Per-dimension `ratios` given with `dims` name only dimensions `dims` lists (else one of them is ignored)."""
    if dims is None or ratios is None:
        return
    outside = [d for d in ratios if d not in dims]
    if outside:
        raise _bad("ratios", f"names {outside}, which dims {list(dims)} leaves out: add them to dims, or leave dims "
                             "out (the ratios name the dimensions they prune)")


def model_dimensions(model: nn.Module, example_inputs: Any) -> tuple[tuple[str, ...], str]:
    """The dimensions `model` can be pruned along (read-only: one trace and one forward pass), and, when tokens are
    not among them, why (for the message)."""
    graph = build_dependency_graph(model, example_inputs)
    have = {group_dimension(g) for g in graph.groups}
    stack, why = token_stack_or_why(model, example_inputs)
    return tuple(d for d in DIMENSIONS if d in have or (d == "tokens" and stack is not None)), why


def require_dims(wanted: Iterable[str], have: Sequence[str], model: str, what: str, why_no_tokens: str = "") -> None:
    """ConfigError when `wanted` names a dimension `model` does not have, naming those it has."""
    missing = [d for d in wanted if d not in have]
    if not missing:
        return
    why = f" ({why_no_tokens})" if "tokens" in missing and why_no_tokens else ""
    raise _bad(what, f"names {missing}, which {model} does not have{why}: it can be pruned along "
                     f"{', '.join(have) or 'nothing'}; choose from those")


def dim_ratio_of_groups(groups: Sequence[Group], ratios: Mapping[str, float]) -> dict[int, float]:
    """The pruning ratio of every group: its dimension's (0 for a dimension not listed)."""
    return {g.id: float(ratios.get(group_dimension(g), 0.0)) for g in groups}
