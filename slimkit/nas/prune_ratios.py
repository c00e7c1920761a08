"""Pruning-ratio search: the share of heads / neurons / tokens (/ embed) to remove that maximises a proxy accuracy
under a MACs budget, by Gaussian-process search with expected improvement (Hou & Kung, arXiv 2201.00043).

It is an ordinary search problem run by slimkit's own BO strategy (`slimkit.nas.strategies.bo`, the same GP + EI
code NAS uses): `RatioSpace` is a grid of ratios per dimension (optionally per layer range: "heads@0" for the first
half of the blocks, "heads@1" for the second), `RatioProblem` prunes the model at a candidate's ratios (one
`Pruner`, scored once) and reports the MACs kept (the constraint `macs <= target`, checked before evaluating) and
the proxy: accuracy on held-out labelled batches, ties broken by their loss. The best feasible ratios are then
relaxed towards less pruning (one common factor, by bisection) until the budget is exactly used.

    result = search_prune_ratios(model, x, macs_target=0.6, data=calib, eval_data=held_out, queries=24)
    result.model, result.ratios, result.proxy
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from slimkit.errors import BudgetError, ConfigError, PruneError
from slimkit.inputs import as_tensor_tuple
from slimkit.nas.search import SearchResult, search
from slimkit.nas.spaces.base import SearchSpace
from slimkit.profile import count_macs
from slimkit.prune import PruneConfig, Pruner
from slimkit.prune.dims import DIMENSIONS, check_dims, model_dimensions
from slimkit.prune.tokens import check_token_method

__all__ = ["RatioSpace", "RatioProblem", "RatioSearchResult", "search_prune_ratios", "DEFAULT_GRID",
           "SEARCH_IMPORTANCE"]

DEFAULT_GRID = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
SEARCH_IMPORTANCE = "taylor"  # the search's channel criterion unless one is given (see search_prune_ratios)


class RatioSpace(SearchSpace):
    """A ratio per dimension from `grid`; an architecture is the tuple of grid indices."""

    name = "prune_ratios"
    encodings = ("ratios", "onehot")

    def __init__(self, dims: Sequence[str], grid: Sequence[float] = DEFAULT_GRID) -> None:
        if not dims:
            raise ConfigError("the ratio search needs at least one dimension to prune")
        if any(not 0.0 <= g < 1.0 for g in grid) or sorted(set(grid)) != list(grid):
            raise ConfigError(f"grid must be increasing ratios in [0, 1), got {list(grid)}")
        self.dims, self.grid = tuple(dims), tuple(float(g) for g in grid)

    def ratios(self, arch: tuple[int, ...]) -> dict[str, float]:
        return {d: self.grid[i] for d, i in zip(self.dims, arch, strict=True)}

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(rng.integers(len(self.grid))) for _ in self.dims)

    def neighbours(self, arch: tuple[int, ...]) -> list[tuple[int, ...]]:
        out = []
        for j in range(len(arch)):
            for step in (-1, 1):
                if 0 <= arch[j] + step < len(self.grid):
                    out.append(arch[:j] + (arch[j] + step,) + arch[j + 1:])
        return out

    def mutate(self, arch: tuple[int, ...], rng: np.random.Generator) -> tuple[int, ...]:
        near = self.neighbours(arch)
        return near[int(rng.integers(len(near)))]

    def encode(self, arch: tuple[int, ...], kind: str = "ratios") -> np.ndarray:
        if kind == "ratios":
            return np.array([self.grid[i] for i in arch], np.float32)
        out = np.zeros((len(arch), len(self.grid)), np.float32)
        out[np.arange(len(arch)), list(arch)] = 1
        return out.ravel()

    def key(self, arch: tuple[int, ...]) -> str:
        return ",".join(str(i) for i in arch)

    def from_key(self, key: str) -> tuple[int, ...]:
        return tuple(int(i) for i in key.split(","))

    def enumerate(self) -> list[tuple[int, ...]] | None:
        n = len(self.grid) ** len(self.dims)
        return list(itertools.product(range(len(self.grid)), repeat=len(self.dims))) if n <= 50000 else None


def _accuracy(model: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> tuple[float, float]:
    correct = total = 0
    loss = 0.0
    model.eval()
    with torch.no_grad():
        for x, y in batches:
            out = model(x)
            loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            total += len(y)
    return correct / total, loss / total


class RatioProblem:
    """Prune at a candidate's ratios; costs: MACs kept (fraction); metric: proxy accuracy on `eval_data`."""

    metric = "proxy"

    def __init__(self, pruner: Pruner, space: RatioSpace, eval_data: Sequence[tuple[torch.Tensor, torch.Tensor]]
                 ) -> None:
        self.pruner, self.space, self.eval_data = pruner, space, list(eval_data)
        self.base = count_macs(pruner.model, pruner.example_inputs)
        self._last: tuple[tuple[int, ...], nn.Module] | None = None
        self._macs: dict[tuple[int, ...], float] = {}

    def model(self, arch: tuple[int, ...]) -> nn.Module:
        if self._last is None or self._last[0] != tuple(arch):
            self._last = (tuple(arch), self.pruner.apply(0.0, self.space.ratios(arch)))
        return self._last[1]

    def costs(self, arch: tuple[int, ...]) -> dict[str, float]:
        arch = tuple(arch)
        if arch not in self._macs:
            self._macs[arch] = count_macs(self.model(arch), self.pruner.example_inputs) / self.base
        return {"macs": self._macs[arch]}

    def evaluate(self, arch: tuple[int, ...]) -> dict[str, float]:
        acc, loss = _accuracy(self.model(arch), self.eval_data)
        return {"proxy": acc - 1e-3 * loss, "accuracy": acc, "loss": loss, **self.costs(arch)}


@dataclass
class RatioSearchResult:
    model: nn.Module  # the pruned model at `ratios`
    ratios: dict[str, float]  # share removed per dimension (after relaxing to the budget)
    macs: float  # MACs kept, fraction of the original
    proxy: dict[str, float]  # proxy accuracy and loss of `model` on the held-out batches
    search: SearchResult  # every trial of the GP-EI search
    searched_ratios: dict[str, float] = field(default_factory=dict)  # the best grid point before relaxing


def _relax(problem: RatioProblem, ratios: dict[str, float], target: float, steps: int = 10
           ) -> tuple[nn.Module, dict[str, float], float]:
    """Scale all ratios by one factor s <= 1 (less pruning) as far as the budget allows (bisection on s)."""
    pruner = problem.pruner
    best = pruner.apply(0.0, ratios)
    best_macs = count_macs(best, pruner.example_inputs) / problem.base
    best_ratios, lo, hi = dict(ratios), 0.0, 1.0
    for _ in range(steps):
        s = (lo + hi) / 2
        cand = {d: r * s for d, r in ratios.items()}
        model = pruner.apply(0.0, cand)
        macs = count_macs(model, pruner.example_inputs) / problem.base
        if macs <= target:
            best, best_macs, best_ratios, hi = model, macs, cand, s
        else:
            lo = s
    return best, best_ratios, best_macs


def search_prune_ratios(model: nn.Module, example_inputs: Any, *, macs_target: float,
                        data: Iterable[Any], eval_data: Iterable[Any] | None = None,
                        dims: Sequence[str] | None = None, queries: int = 24, init: int = 8,
                        grid: Sequence[float] = DEFAULT_GRID, importance: str = SEARCH_IMPORTANCE, seed: int = 0,
                        token_method: str = "select", token_layers: Sequence[int] | None = None,
                        round_to: int | str | None = None, relax: bool = True) -> RatioSearchResult:
    """Find per-dimension pruning ratios maximising proxy accuracy with MACs <= `macs_target` (a fraction of the
    original) by GP-EI search over `grid` (`queries` evaluated candidates, `init` of them random), then prune.

    `data`: labelled calibration batches (importance, token positions); `eval_data`: held-out labelled batches for
    the proxy (default: `data`). `dims` defaults to every dimension (heads, neurons, embed, tokens): the embedding
    width (the residual stream, which Torch-Pruning's ViT recipe cuts with everything else) is searched too, and left
    whole when the proxy says so. By default a dimension the model does not have (tokens of a windowed model, the
    embedding of T2T-ViT's fixed sinusoidal position code) is dropped; one named in `dims` is a ConfigError naming
    the dimensions the model has, raised before any scoring. `importance` defaults to first-order Taylor on `data`: on a
    trained DeiT-style ViT (Fashion-MNIST) its channels kept 52% accuracy at 60% of the MACs along the MLP neurons
    before any fine-tune, against 48% for L1 and 42% for HSIC (measured on benchmarks/vit_prune.py's baseline, README
    "Vision transformers");
    token positions are still chosen by HSIC."""
    if isinstance(macs_target, bool) or not isinstance(macs_target, (int, float)) or not 0.0 < macs_target < 1.0:
        raise ConfigError(f"macs_target is the fraction of MACs to keep, a number in (0, 1) (e.g. 0.6); got "
                          f"{macs_target!r}")
    for name, value, least in (("queries", queries, 2), ("init", init, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{name} must be a whole number >= {least} (the search starts from {least} random "
                              f"candidates before its Gaussian process guides it); got {value!r}")
    if dims is not None:
        check_dims(dims, "dims")
    inputs = as_tensor_tuple(example_inputs)
    data = list(data)
    held_out = list(eval_data) if eval_data is not None else data
    if not data or not held_out:
        raise PruneError("the ratio search scores candidates on labelled batches: pass data=[(x, y), ...]")
    check_token_method(token_method)
    named = dims is not None
    if named:  # the ones asked for, each of which the model must have (the Pruner says so, naming the ones it has)
        dims = tuple(d for d in DIMENSIONS if d in dims)
    else:  # every dimension the model has (read off the model before any scoring)
        have, _ = model_dimensions(model, inputs)
        dims = tuple(d for d in DIMENSIONS if d in have)
    tokens = named or "tokens" in dims  # token options for a model without tokens: an error when dims named them
    cfg = PruneConfig(ratio=0.0, importance=importance, dims=dims, seed=seed,
                      token_method=token_method if tokens else PruneConfig.token_method,
                      token_layers=tuple(token_layers) if token_layers and tokens else None, round_to=round_to)
    pruner = Pruner(model, inputs, cfg, data=data)
    space = RatioSpace(dims, grid)
    problem = RatioProblem(pruner, space, held_out)
    floor = problem.costs(tuple(len(grid) - 1 for _ in dims))["macs"]
    if floor > macs_target:
        raise BudgetError(f"pruning {grid[-1]:.0%} of every dimension of {list(dims)} keeps {floor:.3f} of the MACs, "
                          f"above the target {macs_target}; add dimensions or a larger grid")
    result = search(problem, "bo", queries=queries, seed=seed, constraints=[f"macs <= {macs_target}"],
                    init=min(init, queries), batch=1, encoding="ratios", pool=len(grid) ** len(dims))
    best = result.best
    if best is None:
        raise BudgetError(f"no candidate of the ratio search met macs <= {macs_target} in {queries} evaluations; "
                          "raise queries")
    ratios = space.ratios(space.from_key(best.key))
    pruned, final, macs = (_relax(problem, ratios, macs_target) if relax else
                           (problem.model(space.from_key(best.key)), ratios, best.costs["macs"]))
    acc, loss = _accuracy(pruned, held_out)
    return RatioSearchResult(pruned, final, macs, {"accuracy": acc, "loss": loss}, result, ratios)
