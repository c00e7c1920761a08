"""Regularized evolution (Real et al., AAAI 2019): tournament selection, mutation, and ageing (the oldest member
dies, not the worst). With `features` and `warm_start=K` the first population comes from the K best by the
features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from slimkit.errors import ConfigError
from slimkit.nas.strategies.base import Strategy
from slimkit.nas.trial import Trial
from slimkit.registry import STRATEGIES

__all__ = ["RegularizedEvolution"]


@STRATEGIES.register("evolution")
class RegularizedEvolution(Strategy):
    name = "evolution"

    def __init__(self, space: Any, seed: int = 0, feasible: Any = None, population: int = 30,
                 tournament: int = 10, mutation_tries: int = 100, features: Sequence[str] = (),
                 warm_start: int = 0) -> None:
        super().__init__(space, seed, feasible, features, warm_start)
        if not 1 <= tournament <= population:
            raise ConfigError(f"need 1 <= tournament <= population, got {tournament} and {population}")
        self.population_size, self.tournament, self.mutation_tries = population, tournament, mutation_tries
        self.population: list[tuple[str, float]] = []  # oldest first

    def _propose(self) -> list[Any]:
        if len(self.population) < self.population_size:
            return self.initial(1)
        idx = self.rng.choice(len(self.population), self.tournament, replace=False)
        parent = self.space.from_key(max((self.population[i] for i in idx), key=lambda p: p[1])[0])
        for _ in range(self.mutation_tries):
            child = self.space.mutate(parent, self.rng)
            if self.is_new(child) and self.feasible(child):
                return [child]
        return self.sample_new(1)

    def tell(self, trial: Trial) -> None:
        super().tell(trial)
        if trial.ok:
            self.population.append((trial.key, float(trial.score)))  # type: ignore[arg-type]
            if len(self.population) > self.population_size:
                self.population.pop(0)

    def _state(self) -> dict[str, Any]:
        return {"population": self.population}

    def _load_state(self, state: dict[str, Any]) -> None:
        self.population = [tuple(p) for p in state.get("population", [])]  # type: ignore[misc]
