"""One evaluated architecture: what a search records, checkpoints and reports."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Trial"]


@dataclass
class Trial:
    index: int                      # query number, from 0
    key: str                        # the space's id of the architecture
    score: float | None = None      # the objective (higher is better); None when the evaluation failed
    metrics: dict[str, float] = field(default_factory=dict)   # everything the evaluation returned
    costs: dict[str, float] = field(default_factory=dict)     # the cheap costs used by constraints
    feasible: bool = True
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.score is not None and not math.isnan(self.score)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trial:
        return cls(**d)
