"""`search()`: run a strategy on a problem under constraints, checkpointing after every trial.

    from slimkit.nas import NB201Benchmark, search
    bench = NB201Benchmark.from_csv("nb201_cifar10_200ep.csv", metric="cifar10valid_xvalid_200ep")
    result = search(bench, strategy="weaknas", queries=150, seed=0, constraints=["params_M <= 1.0"])
    result.best.key, result.best.score, result.history[:3]

With `run_dir`, every trial is appended to the journal `run_dir/search_journal.jsonl` with the strategy's state
after it (pending proposals, the RNG stream, the strategy's own state; `slimkit.nas.journal`), at a constant cost
per trial; `resume=True` replays it, so a killed search loses nothing and goes on exactly as if uninterrupted.
`stop(trial) -> bool` ends a search early (e.g. once a target is found).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimkit._deprecated import renamed_kwarg
from slimkit.errors import CheckpointError, ConfigError, SearchError
from slimkit.nas.constraints import Constraint, parse_constraints, satisfies
from slimkit.nas.executors import create_executor
from slimkit.nas.journal import JOURNAL, SearchJournal
from slimkit.nas.problem import Problem
from slimkit.nas.spaces.base import SearchSpace
from slimkit.nas.strategies.base import Strategy
from slimkit.nas.trial import Trial
from slimkit.registry import STRATEGIES

__all__ = ["SearchResult", "create_strategy", "list_strategies", "search", "STATE_FILE"]

STATE_FILE = JOURNAL


@dataclass
class SearchResult:
    history: list[Trial]            # every trial in query order
    strategy: str
    seed: int
    metric: str
    constraints: list[str] = field(default_factory=list)

    @property
    def best(self) -> Trial | None:
        ok = [t for t in self.history if t.ok and t.feasible]
        return max(ok, key=lambda t: t.score) if ok else None  # type: ignore[arg-type, return-value]

    def best_so_far(self) -> np.ndarray:
        """Best feasible score after each query (NaN until the first success)."""
        out, best = [], -np.inf
        for t in self.history:
            if t.ok and t.feasible:
                best = max(best, float(t.score))  # type: ignore[arg-type]
            out.append(best if np.isfinite(best) else np.nan)
        return np.array(out)

    def queries_to(self, keys: Sequence[str]) -> int | None:
        """1-based query count at which one of `keys` (e.g. the optimum) was first evaluated, or None."""
        wanted = set(keys)
        return next((i + 1 for i, t in enumerate(self.history) if t.key in wanted), None)

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {"strategy": self.strategy, "seed": self.seed, "metric": self.metric, "constraints": self.constraints,
                "best": best.to_dict() if best else None, "history": [t.to_dict() for t in self.history]}


def create_strategy(name: str, space: SearchSpace, seed: int = 0, feasible: Callable[[Any], bool] | None = None,
                    **kwargs: Any) -> Strategy:
    cls = STRATEGIES.get(name)
    try:
        return cls(space, seed=seed, feasible=feasible, **kwargs)
    except TypeError as e:
        raise ConfigError(f"bad options for strategy {name!r}: {e}") from None


def list_strategies(pattern: str = "*") -> list[str]:
    return STRATEGIES.list(pattern)


def _feasibility(problem: Problem, constraints: Sequence[Constraint]) -> Callable[[Any], bool]:
    cache: dict[str, bool] = {}

    def feasible(arch: Any) -> bool:
        if not constraints:
            return True
        k = problem.space.key(arch)
        if k not in cache:
            cache[k] = satisfies(problem.costs(arch), constraints)
        return cache[k]
    return feasible


def search(problem: Problem, strategy: str | Strategy = "weaknas", queries: int = 100, seed: int = 0,
           constraints: Sequence[str | Constraint] | str | None = None, executor: str | Any = "local",
           workers: int = 2, run_dir: str | Path | None = None, resume: bool = False,
           callback: Callable[[Trial], None] | None = None, stop: Callable[[Trial], bool] | None = None,
           budget: int | None = None, **strategy_kwargs: Any) -> SearchResult:
    """Search `problem` for the best feasible architecture in `queries` evaluations (see the module docstring).
    `budget=` is the deprecated old name of `queries=` ("budget" in slimkit means a pruning target)."""
    queries = renamed_kwarg("queries", queries, "budget", budget, 100)
    if isinstance(problem, SearchSpace) or not isinstance(problem, Problem):
        raise ConfigError("search() needs a problem that can score architectures: a tabular benchmark "
                          "(NB201Benchmark.from_csv) or TrainProblem(space, data=...); a search space alone has "
                          "no evaluator")
    if queries < 1:
        raise ConfigError(f"queries must be >= 1 (architectures evaluated), got {queries}")
    cons = parse_constraints(constraints)
    feasible = _feasibility(problem, cons)
    if isinstance(strategy, Strategy):
        strat = strategy
        strat.feasible = feasible if cons else strat.feasible
    else:
        strat = create_strategy(strategy, problem.space, seed=seed, feasible=feasible, **strategy_kwargs)
    meta = {"strategy": strat.name, "seed": seed, "metric": problem.metric, "constraints": [str(c) for c in cons],
            "options": {k: repr(v) for k, v in sorted(strategy_kwargs.items())}}
    journal = SearchJournal(run_dir, meta) if run_dir is not None else None
    if journal is not None:
        if journal.exists() and not resume:
            raise CheckpointError(f"{journal.path} exists: pass resume=True (--resume) to continue that search, or "
                                  "choose a new run directory")
        state = journal.load() if resume else None
        if state is not None:
            strat.load_state_dict(state)
        elif not journal.path.is_file():
            journal.start()

    def on_trial(trial: Trial) -> None:
        trial.feasible = trial.ok and (not cons or satisfies(trial.costs, cons))
        if journal is not None:
            journal.append(strat, trial)  # one line per trial: constant cost however long the search
        if callback is not None:
            callback(trial)

    ex = create_executor(executor, workers)
    try:
        strat.run(problem, queries, ex, on_trial, stop)
    except SearchError:
        if not strat.trials:
            raise
    finally:
        ex.close()
    return SearchResult(list(strat.trials), strat.name, seed, problem.metric, [str(c) for c in cons])
