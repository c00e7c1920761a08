"""What a search optimises: a space, an expensive evaluation and cheap costs.

`evaluate(arch)` returns a dict of metrics that contains `metric` (the objective, higher is better); `costs(arch)`
returns the cheap numbers constraints are checked on (parameters, MACs, a latency table), known before evaluating.
Tabular benchmarks (`NB201Benchmark`) and training-based problems (`TrainProblem`) both implement it.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from slimkit.nas.spaces.base import SearchSpace

__all__ = ["Problem"]


@runtime_checkable
class Problem(Protocol):
    space: SearchSpace
    metric: str

    def evaluate(self, arch: Any) -> dict[str, float]: ...

    def costs(self, arch: Any) -> dict[str, float]: ...
