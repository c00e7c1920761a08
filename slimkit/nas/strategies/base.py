"""The strategy base: ask for architectures, tell their results, save and restore state.

A strategy proposes batches (`_propose`) from what it has seen; `ask()` hands them out one by one, `tell(trial)`
records a result. `run(problem, budget)` is the whole loop (with an optional executor and a per-trial callback);
it calls `_run()`, which subclasses rarely override. Everything a strategy knows is in `state_dict()` (JSON-able:
trials, pending proposals, the numpy RNG state and the subclass's own state), so a resumed search continues with
the same random stream and loses nothing.

Strategies never propose an architecture twice and only propose feasible ones (`feasible(arch)` is checked on the
cheap costs before any evaluation).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from slimkit.errors import SearchError
from slimkit.nas.spaces.base import SearchSpace
from slimkit.nas.trial import Trial

__all__ = ["Strategy"]

_MAX_TRIES = 1000


class Strategy:
    name = "strategy"

    def __init__(self, space: SearchSpace, seed: int = 0, feasible: Callable[[Any], bool] | None = None) -> None:
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
    def run(self, problem: Any, budget: int, executor: Any = None, callback: Callable[[Trial], None] | None = None,
            stop: Callable[[Trial], bool] | None = None) -> list[Trial]:
        """Evaluate architectures until `budget` trials exist (earlier trials, e.g. from a resume, count) or
        `stop(trial)` returns True."""
        self.status = "running"
        try:
            self._run(problem, budget, executor, callback, stop)
        except BaseException:
            self.status = "interrupted"
            raise
        self.status = "done"
        return self.trials

    def _run(self, problem: Any, budget: int, executor: Any, callback: Callable[[Trial], None] | None,
             stop: Callable[[Trial], bool] | None) -> None:
        from slimkit.nas.executors import LocalExecutor

        executor = executor or LocalExecutor()
        done = False
        while len(self.trials) < budget and not done:
            want = min(executor.parallelism, budget - len(self.trials))
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
