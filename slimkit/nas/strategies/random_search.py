"""Random search: uniform samples without repetition (on a listed space, a random permutation of it)."""

from __future__ import annotations

from typing import Any

from slimkit.nas.strategies.base import Strategy
from slimkit.registry import STRATEGIES

__all__ = ["RandomSearch"]


@STRATEGIES.register("random")
class RandomSearch(Strategy):
    name = "random"

    def __init__(self, space: Any, seed: int = 0, feasible: Any = None, batch: int = 10) -> None:
        super().__init__(space, seed, feasible)
        self.batch = batch

    def _propose(self) -> list[Any]:
        pool = self.candidate_pool(self.batch)  # a listed space: what is left; else `batch` fresh samples
        return [pool[i] for i in self.first_feasible(pool, self.rng.permutation(len(pool)), self.batch)]
