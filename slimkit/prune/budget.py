"""What a pruning plan costs, computed from the channel counts alone (no model is built): MACs and parameters; and
`solve`, the one bisection that finds the least pruning meeting a budget.

MACs: every traced operation's MACs, counted once on the unpruned model (`slimkit.profile.count_node_macs`), scale
with the kept share of the channel dimensions the graph lists for it (`slimkit.graph.costs`): a convolution with
its input and output channels, a linear layer with its in and out features, a matmul or an attention with its
(head) channels. Parameters: every parameter tensor shrinks along the dimensions the plan slices (the same roles
surgery uses). Both are exact for the layers the graph models; the pruner still counts the final model for real
and corrects the search if the two ever disagree.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from torch import nn

from slimkit.errors import ConfigError
from slimkit.graph import Group
from slimkit.graph.costs import Dim
from slimkit.graph.params import parse_param_role

__all__ = ["BUDGET_KINDS", "Budget", "MacsModel", "ParamsModel", "solve"]

BUDGET_KINDS = ("ratio", "macs_target", "params_target", "latency_target")  # the keyword each is given as


@dataclass(frozen=True)
class Budget:
    """One pruning budget, the same value whichever method meets it: `kind` is ratio (share of channels removed),
    macs_target / params_target (what to keep: a fraction of the original, or an `absolute` count when above 1) or
    latency_target (onnxruntime batch-1 milliseconds)."""

    kind: str
    value: float
    absolute: bool = field(init=False)  # macs / params given as a count, not a fraction of the original

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise ConfigError(f"budget kind must be one of {', '.join(BUDGET_KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "absolute", self.kind in ("macs_target", "params_target") and self.value > 1)

    @classmethod
    def of(cls, **given: float | None) -> Budget:
        """The one budget among keyword arguments (None: not given), e.g. `Budget.of(ratio=None, macs_target=0.5)`."""
        set_ = {k: v for k, v in given.items() if v is not None}
        if len(set_) != 1:
            raise ConfigError(f"give exactly one budget: {', '.join(BUDGET_KINDS)} (got {sorted(set_) or 'none'})")
        ((kind, value),) = set_.items()
        return cls(kind, float(value))

    def kwargs(self) -> dict[str, Any]:
        """As the keyword `slimkit.prune.prune` takes: {"macs_target": 0.5}."""
        return {self.kind: self.value}

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"


def _scaled(dim: Dim, keep: dict[int, int], size: dict[int, int]) -> tuple[int, int]:
    """(length after, length before) of one tensor dimension."""
    before = sum(n for _, n in dim)
    after = sum(n if g is None or g not in keep else n * keep[g] // size[g] for g, n in dim)
    return after, before


@dataclass(frozen=True)
class MacsModel:
    """MACs of the model as a function of the kept channel count of each group."""

    terms: tuple[tuple[int, tuple[Dim, ...]], ...]  # (MACs of one operation before pruning, its scaling dims)
    sizes: dict[int, int]  # group id -> channels before pruning

    @classmethod
    def build(cls, node_macs: dict[str, int], dims: dict[str, tuple[Dim, ...]], groups: Sequence[Group]
              ) -> MacsModel:
        ids = {g.id for g in groups}
        terms = []
        for name, macs in node_macs.items():
            ds = tuple(d for d in dims.get(name, ()) if any(g in ids for g, _ in d))
            terms.append((macs, ds))
        return cls(tuple(terms), {g.id: g.size for g in groups})

    @property
    def total(self) -> int:
        return sum(m for m, _ in self.terms)

    def __call__(self, keep: dict[int, int]) -> int:
        total = Fraction(0)
        for macs, ds in self.terms:
            f = Fraction(macs)
            for d in ds:
                after, before = _scaled(d, keep, self.sizes)
                f *= Fraction(after, before)
            total += f
        return round(total)


@dataclass(frozen=True)
class ParamsModel:
    """Unique parameters of the model as a function of the kept channel count of each group."""

    tensors: tuple[tuple[int, tuple[tuple[int, tuple[tuple[int, int], ...]], ...]], ...]
    # per parameter: (numel, per sliced dimension: (its length, ((group id, indices per channel cut), ...)))
    sizes: dict[int, int]

    @classmethod
    def build(cls, model: nn.Module, groups: Sequence[Group]) -> ParamsModel:
        mods = dict(model.named_modules())
        params = list({id(p): p for p in model.parameters()}.values())
        index = {id(p): i for i, p in enumerate(params)}
        cuts: dict[tuple[int, int], list[tuple[int, int]]] = {}  # (parameter, dim) -> [(group, per channel)]
        for g in groups:
            for m in g.members:
                mod = mods[m.module]
                for attr, dim in _sliced(m.role):
                    p = getattr(mod, attr, None)
                    if isinstance(p, nn.Parameter) and id(p) in index and dim < p.dim():
                        cuts.setdefault((index[id(p)], dim), []).append((g.id, m.tile * m.repeat))
        tensors = tuple((p.numel(), tuple((p.shape[d], tuple(c)) for (j, d), c in cuts.items() if j == i))
                        for i, p in enumerate(params))
        return cls(tensors, {g.id: g.size for g in groups})

    def __call__(self, keep: dict[int, int]) -> int:
        total = Fraction(0)
        for numel, dims in self.tensors:
            f = Fraction(numel)
            for length, cuts in dims:
                removed = sum((self.sizes[g] - keep.get(g, self.sizes[g])) * per for g, per in cuts)
                f *= Fraction(length - removed, length)
            total += f
        return round(total)


def solve(fits: Callable[[float], bool], cap: float, steps: int = 20) -> float:
    """The smallest ratio in [0, cap] (to cap / 2**steps) for which `fits` holds, by bisection; cap if none does.
    `fits` must be monotone (pruning more never costs more): every budget search over a pruning ratio uses this."""
    if fits(0.0):
        return 0.0
    lo, hi = 0.0, cap
    if not fits(hi):
        return hi
    for _ in range(steps):
        mid = (lo + hi) / 2
        if fits(mid):
            hi = mid
        else:
            lo = mid
    return hi


def solve_closest(cost: Callable[[float], float], goal: float, cap: float, steps: int = 20, grid: int = 64
                  ) -> float:
    """The ratio in [0, cap] whose `cost` is the highest at or below `goal` (the least pruning that meets it; the
    smaller ratio on a tie), or `solve`'s answer if no ratio meets it. Whole vector blocks and the rounding carried
    across groups make the cost of a plan a step function that is not quite monotone in the ratio (one more
    percent can flip a whole stage from 16 to 8 channels, and a little more can flip it back), so the bisection's
    first fitting ratio can sit far below `goal`: `grid` evenly spaced ratios are tried beside it."""
    fitting = solve(lambda r: cost(r) <= goal, cap, steps)
    best, best_cost = fitting, cost(fitting)
    for i in range(grid + 1):
        r = cap * i / grid
        c = cost(r)
        if c <= goal and (c > best_cost or best_cost > goal or (c == best_cost and r < best)):
            best, best_cost = r, c
    return best


def _sliced(role: str) -> list[tuple[str, int]]:
    """(attribute, dimension) of the parameters surgery slices for a plan entry of `role` (see surgery.py)."""
    param = parse_param_role(role)
    if param is not None:
        return [param]
    if role == "in":
        return [("weight", 1)]
    if role in ("out", "dw", "norm"):
        return [("weight", 0), ("bias", 0)]
    return []

