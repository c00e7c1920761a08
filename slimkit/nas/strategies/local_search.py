"""Local search (as in White et al., "Local Search is State of the Art for NAS Benchmarks"): start from the best
random sample, evaluate unseen neighbours of the current architecture one at a time, move as soon as one is better,
restart from a random architecture at a local optimum. With `features` and `warm_start=K` the initial samples come
from the K best by the features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slimkit.nas.strategies.base import Strategy
from slimkit.nas.trial import Trial
from slimkit.registry import STRATEGIES

__all__ = ["LocalSearch"]


@STRATEGIES.register("local")
class LocalSearch(Strategy):
    name = "local"

    def __init__(self, space: Any, seed: int = 0, feasible: Any = None, init: int = 10,
                 features: Sequence[str] = (), warm_start: int = 0) -> None:
        super().__init__(space, seed, feasible, features, warm_start)
        self.init = init
        self.current: tuple[str, float] | None = None
        self.restarting = False

    def _propose(self) -> list[Any]:
        if len(self.ok_trials) < self.init:
            return self.initial(1)
        if self.current is None:
            best = self.best()
            self.current = (best.key, float(best.score)) if best else None  # type: ignore[arg-type]
        if self.current is not None:
            options = [a for a in self.space.neighbours(self.space.from_key(self.current[0]))
                       if self.is_new(a) and self.feasible(a)]
            if options:
                self.restarting = False
                return [options[int(self.rng.integers(len(options)))]]
        self.restarting = True  # local optimum: restart at a random architecture
        return self.sample_new(1)

    def tell(self, trial: Trial) -> None:
        super().tell(trial)
        if not trial.ok or len(self.ok_trials) <= self.init:
            return
        if self.restarting or self.current is None or trial.score > self.current[1]:  # type: ignore[operator]
            self.current, self.restarting = (trial.key, float(trial.score)), False  # type: ignore[arg-type]

    def _state(self) -> dict[str, Any]:
        return {"current": self.current, "restarting": self.restarting}

    def _load_state(self, state: dict[str, Any]) -> None:
        cur = state.get("current")
        self.current = tuple(cur) if cur else None  # type: ignore[assignment]
        self.restarting = bool(state.get("restarting", False))
