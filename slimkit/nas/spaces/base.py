"""The search-space protocol: a space owns sampling, mutation, neighbourhoods, encodings and building.

Strategies only talk to this interface, so one strategy searches every space. An architecture is any JSON-friendly
value (tuple of ints, dict of choices); `key(arch)` is its stable string id, used for de-duplication, history files
and resume.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from slimkit.errors import ConfigError

__all__ = ["SearchSpace"]


class SearchSpace(ABC):
    name: str = "space"
    encodings: tuple[str, ...] = ("onehot",)

    @abstractmethod
    def sample(self, rng: np.random.Generator) -> Any:
        """One architecture drawn uniformly from the space."""

    @abstractmethod
    def mutate(self, arch: Any, rng: np.random.Generator) -> Any:
        """A random neighbour of `arch` (one choice changed)."""

    @abstractmethod
    def neighbours(self, arch: Any) -> list[Any]:
        """Every architecture one choice away from `arch`."""

    @abstractmethod
    def encode(self, arch: Any, kind: str = "onehot") -> np.ndarray:
        """A fixed-length float vector for predictors."""

    @abstractmethod
    def key(self, arch: Any) -> str:
        """A stable string id (same architecture, same key)."""

    @abstractmethod
    def from_key(self, key: str) -> Any:
        """Inverse of `key`."""

    def build(self, arch: Any, **kwargs: Any) -> nn.Module:
        raise ConfigError(f"search space {self.name!r} cannot build trainable models; use a space that defines build()")

    def enumerate(self) -> list[Any] | None:
        """All architectures if the space is small enough to list, else None."""
        return None

    def encode_many(self, archs: Sequence[Any], kind: str = "onehot") -> np.ndarray:
        if kind not in self.encodings:
            raise ConfigError(f"unknown encoding {kind!r} for space {self.name!r}; choose one of "
                              f"{list(self.encodings)}")
        return np.stack([self.encode(a, kind) for a in archs]).astype(np.float32)
