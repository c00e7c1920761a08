"""The strategy base: ask for architectures, tell their results, save and restore state.

A strategy proposes batches (`_propose`) from what it has seen; `ask()` hands them out one by one, `tell(trial)`
records a result. `run(problem, queries)` is the whole loop (with an optional executor and a per-trial callback);
it calls `_run()`, which subclasses rarely override. Everything a strategy knows is in `state_dict()` (JSON-able:
trials, pending proposals, the numpy RNG state and the subclass's own state), so a resumed search continues with
the same random stream and loses nothing.

Strategies never propose an architecture twice and only propose feasible ones (`feasible(arch)` is checked on the
cheap costs before any evaluation). `features=[...]` names training-free numbers the problem provides
(`problem.features(archs, names)`); `warm_start=K` starts from the K best by them instead of uniform samples.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from slimkit._deprecated import renamed_kwarg
from slimkit.errors import ConfigError, SearchError
from slimkit.nas.predictors import normal_scores
from slimkit.nas.spaces.base import SearchSpace
from slimkit.nas.trial import Trial

__all__ = ["Strategy"]

_MAX_TRIES = 1000


class Strategy:
    name = "strategy"
    uses_features = False  # True: features are predictor inputs; False: they only serve the warm start

    def __init__(self, space: SearchSpace, seed: int = 0, feasible: Callable[[Any], bool] | None = None,
                 features: Sequence[str] = (), warm_start: int = 0) -> None:
        self.features = (features,) if isinstance(features, str) else tuple(features)
        if warm_start < 0 or (warm_start and not self.features):
            raise ConfigError(f"warm_start={warm_start} draws the starting architectures from the warm_start best by "
                              "the features: give features=[...] and warm_start >= 1 (e.g. 500), or leave it 0")
        if self.features and not warm_start and not self.uses_features:
            raise ConfigError(f"strategy {self.name!r} uses features only to warm-start: add warm_start=K (e.g. 500) "
                              "or drop features")
        self.warm_start = warm_start
        self.problem: Any = None                 # set by run(): the features come from it
        self._raw: dict[Any, np.ndarray] = {}    # arch -> the problem's raw feature values (recomputable)
        self._warm: list[Any] | None = None      # the warm_start best by the features (recomputable)
        self.space, self.seed = space, seed
        self.rng = np.random.default_rng(seed)
        self.feasible = feasible or (lambda arch: True)
        self.trials: list[Trial] = []
        self.pending: list[str] = []      # proposed, not yet handed out
        self.inflight: list[str] = []     # handed out, no result yet
        self.seen: set[str] = set()       # every key proposed so far
        self.status = "new"
        self._all: list[tuple[Any, str]] | None = None  # the listed space with keys, built once

    # -- hooks ------------------------------------------------------------------------------------------------------
    def _propose(self) -> list[Any]:
        """The next batch of new, feasible architectures (at least one)."""
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        return {}

    def _load_state(self, state: dict[str, Any]) -> None:
        pass

    # -- helpers for subclasses -------------------------------------------------------------------------------------
    def is_new(self, arch: Any) -> bool:
        return self.space.key(arch) not in self.seen

    def sample_new(self, n: int = 1, checked: bool = True) -> list[Any]:
        """Up to `n` distinct new architectures drawn uniformly, feasible ones only unless `checked=False`."""
        out: list[Any] = []
        keys: set[str] = set()
        for _ in range(_MAX_TRIES * max(n, 1)):
            if len(out) == n:
                break
            arch = self.space.sample(self.rng)
            k = self.space.key(arch)
            if k not in self.seen and k not in keys and (not checked or self.feasible(arch)):
                out.append(arch)
                keys.add(k)
        return out

    def candidate_pool(self, size: int = 5000, checked: bool = True) -> list[Any]:
        """Unseen architectures to rank: the whole space when it can be listed (NOT checked for feasibility: that
        can mean building a model per architecture; use `first_feasible` on the ranking), else `size` new samples,
        feasible ones only unless `checked=False` (for callers that rank first and check with `first_feasible`)."""
        if self._all is None:
            listed = self.space.enumerate()
            self._all = None if listed is None else [(a, self.space.key(a)) for a in listed]
        if self._all is not None:
            return [a for a, k in self._all if k not in self.seen]
        return self.sample_new(size, checked)

    def first_feasible(self, cands: list[Any], order: Any, n: int) -> list[int]:
        """The first `n` indices in `order` whose candidates are feasible (feasibility checked lazily)."""
        out: list[int] = []
        for i in order:
            if len(out) == n:
                break
            if self.feasible(cands[int(i)]):
                out.append(int(i))
        return out

    # -- training-free features and the warm start -----------------------------------------------------------------
    def _check_features(self, problem: Any) -> None:
        if not callable(getattr(problem, "features", None)):
            raise ConfigError(f"features={list(self.features)} need a problem that provides training-free features; "
                              f"{type(problem).__name__} does not (NB201Benchmark reads table columns, TrainProblem "
                              "computes costs and proxies): drop features= or use one of those")
        self.problem = problem
        self.raw_features([self.space.sample(np.random.default_rng(0))])  # a bad name fails now, not mid-search

    def raw_features(self, archs: Sequence[Any]) -> np.ndarray:
        """(n, len(features)) raw values from the problem, cached per architecture (tuples are their own cache
        key: `space.key` on a whole listed space every iteration would cost more than the predictor)."""
        keys = [a if isinstance(a, tuple) else self.space.key(a) for a in archs]
        todo = {k: a for k, a in zip(keys, archs, strict=True) if k not in self._raw}
        if todo:
            if self.problem is None:
                raise ConfigError("features need the problem: drive the strategy with run(problem, ...) or search(), "
                                  "or set strategy.problem before ask()")
            vals = np.asarray(self.problem.features(list(todo.values()), self.features), np.float64)
            self._raw.update(zip(todo, vals.reshape(len(todo), len(self.features)), strict=True))
        return np.stack([self._raw[k] for k in keys]) if keys else np.zeros((0, len(self.features)))

    def initial(self, n: int) -> list[Any]:
        """`n` new starting architectures: uniform, or (warm_start=K) uniform among the K feasible architectures with
        the highest mean normal score of the features (each assumed to grow with the objective, as params, FLOPs
        and NASWOT do on NAS-Bench-201; zero-cost warm-up, Abdelfattah et al., ICLR 2021)."""
        if not self.warm_start:
            return self.sample_new(n)
        if self._warm is None:  # over the whole space (or a fixed sample of it), so a resume rebuilds the same list
            cands = self.space.enumerate()
            if cands is None:
                rng = np.random.default_rng([self.seed, 7])
                cands = list({self.space.key(a): a for a in (self.space.sample(rng)
                                                             for _ in range(20 * self.warm_start))}.values())
            score = normal_scores(self.raw_features(cands)).mean(1)
            self._warm = [cands[i] for i in self.first_feasible(cands, np.argsort(-score, kind="stable"),
                                                                self.warm_start)]
        left = [a for a in self._warm if self.is_new(a)]
        if not left:
            return self.sample_new(n)
        return [left[i] for i in self.rng.choice(len(left), min(n, len(left)), replace=False)]

    @property
    def ok_trials(self) -> list[Trial]:
        return [t for t in self.trials if t.ok]

    # -- ask / tell -------------------------------------------------------------------------------------------------
    def ask(self) -> Any:
        if not self.pending:
            batch = [a for a in self._propose() if self.is_new(a)]
            if not batch:
                raise SearchError(f"strategy {self.name!r} found no new feasible architecture to propose; the space "
                                  "is exhausted or the constraints leave nothing feasible")
            for a in batch:
                k = self.space.key(a)
                if k not in self.seen:
                    self.seen.add(k)
                    self.pending.append(k)
        key = self.pending.pop(0)
        self.inflight.append(key)
        return self.space.from_key(key)

    def tell(self, trial: Trial) -> None:
        if trial.key in self.inflight:
            self.inflight.remove(trial.key)
        self.seen.add(trial.key)
        self.trials.append(trial)

    # -- the loop ---------------------------------------------------------------------------------------------------
    def run(self, problem: Any, queries: int = 100, executor: Any = None,
            callback: Callable[[Trial], None] | None = None, stop: Callable[[Trial], bool] | None = None,
            budget: int | None = None) -> list[Trial]:
        """Evaluate architectures until `queries` trials exist (earlier trials, e.g. from a resume, count) or
        `stop(trial)` returns True. `budget=` is the deprecated old name of `queries=`."""
        queries = renamed_kwarg("queries", queries, "budget", budget, 100)
        self.status = "running"
        try:
            if self.features:
                self._check_features(problem)
            self._run(problem, queries, executor, callback, stop)
        except BaseException:
            self.status = "interrupted"
            raise
        self.status = "done"
        return self.trials

    def _run(self, problem: Any, queries: int, executor: Any, callback: Callable[[Trial], None] | None,
             stop: Callable[[Trial], bool] | None) -> None:
        from slimkit.nas.executors import LocalExecutor

        executor = executor or LocalExecutor()
        done = False
        while len(self.trials) < queries and not done:
            want = min(executor.parallelism, queries - len(self.trials))
            archs = [self.ask() for _ in range(want)]
            for trial in executor.evaluate(problem, archs, start=len(self.trials)):
                self.tell(trial)
                if callback is not None:
                    callback(trial)
                done = done or bool(stop is not None and stop(trial))

    # -- state ------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "seed": self.seed, "rng": self.rng.bit_generator.state,
                "trials": [t.to_dict() for t in self.trials], "pending": self.inflight + self.pending,
                "seen": sorted(self.seen), "extra": self._state(), "saved_at": time.time()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name") != self.name:
            raise SearchError(f"checkpoint is for strategy {state.get('name')!r}, not {self.name!r}; resume with the "
                              "same strategy or start a new run directory")
        self.rng.bit_generator.state = state["rng"]
        self.trials = [Trial.from_dict(t) for t in state["trials"]]
        self.pending, self.inflight = list(state["pending"]), []
        self.seen = set(state["seen"])
        self._load_state(state.get("extra", {}))

    def best(self, trials: Iterable[Trial] | None = None) -> Trial | None:
        ok = [t for t in (self.trials if trials is None else trials) if t.ok and t.feasible]
        return max(ok, key=lambda t: t.score) if ok else None  # type: ignore[arg-type, return-value]
