"""The NAS-Bench-201 cell space (Dong & Yang, ICLR 2020): 6 edges of a 4-node DAG, 5 ops each, 15,625 cells.

An architecture is a tuple of 6 op indices in cell-string order: edges (0->1), (0->2), (1->2), (0->3), (1->3),
(2->3), ops indexed as in `OPS`. Cell strings use the official format
`|op~0|+|op~0|op~1|+|op~0|op~1|op~2|` (the format, `OPS` and `EDGES` belong to `slimkit.models.nb201`, the
network's own file). `build()` returns the benchmark's macro skeleton (`NB201Network`).

Encodings: `onehot` (6 x 5 = 30 bits) and `path` (BANANAS-style: one count per op sequence along the input->output
paths that avoid `none`; 4 + 16 + 64 = 84 features).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from slimkit.errors import ConfigError
from slimkit.models.nb201 import EDGES, OPS, NB201Network, cell_to_str, str_to_cell
from slimkit.nas.spaces.base import SearchSpace
from slimkit.registry import SPACES

__all__ = ["EDGES", "OPS", "NB201Space", "cell_to_str", "str_to_cell"]

_PATHS = ((0, 3), (0, 1, 3), (0, 2, 3), (0, 1, 2, 3))  # node sequences from input (0) to output (3)
_EDGE_INDEX = {e: i for i, e in enumerate(EDGES)}
_REAL_OPS = OPS[1:]  # ops that pass information
_PATH_FEATURES = {seq: i for i, seq in enumerate(
    s for n in (1, 2, 3) for s in itertools.product(range(len(_REAL_OPS)), repeat=n))}


@SPACES.register("nb201", paper="NAS-Bench-201 (Dong & Yang, ICLR 2020)")
class NB201Space(SearchSpace):
    name = "nb201"
    encodings = ("onehot", "path", "index")
    num_edges, num_ops = len(EDGES), len(OPS)

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        return tuple(int(v) for v in rng.integers(0, self.num_ops, self.num_edges))

    def mutate(self, arch: Any, rng: np.random.Generator) -> tuple[int, ...]:
        cell = list(self._check(arch))
        e = int(rng.integers(self.num_edges))
        cell[e] = int((cell[e] + rng.integers(1, self.num_ops)) % self.num_ops)
        return tuple(cell)

    def neighbours(self, arch: Any) -> list[tuple[int, ...]]:
        cell = self._check(arch)
        return [cell[:e] + (o,) + cell[e + 1:] for e in range(self.num_edges) for o in range(self.num_ops)
                if o != cell[e]]

    def encode(self, arch: Any, kind: str = "onehot") -> np.ndarray:
        cell = self._check(arch)
        if kind == "onehot":
            v = np.zeros((self.num_edges, self.num_ops), np.float32)
            v[np.arange(self.num_edges), cell] = 1
            return v.ravel()
        if kind == "path":
            v = np.zeros(len(_PATH_FEATURES), np.float32)
            for path in _PATHS:
                ops = [cell[_EDGE_INDEX[(a, b)]] for a, b in zip(path, path[1:], strict=False)]
                if 0 not in ops:  # a `none` edge cuts the path
                    v[_PATH_FEATURES[tuple(o - 1 for o in ops)]] += 1
            return v
        if kind == "index":
            return np.asarray(cell, np.float32)
        raise ConfigError(f"unknown encoding {kind!r} for space 'nb201'; choose one of {list(self.encodings)}")

    def encode_many(self, archs: Sequence[Any], kind: str = "onehot") -> np.ndarray:
        cells = np.array([self._check(a) for a in archs], dtype=np.int64).reshape(-1, self.num_edges)
        if kind == "onehot":  # vectorised: strategies encode the whole space every iteration
            return np.eye(self.num_ops, dtype=np.float32)[cells].reshape(len(cells), -1)
        return super().encode_many([tuple(c) for c in cells], kind)

    def key(self, arch: Any) -> str:
        return cell_to_str(self._check(arch))

    def from_key(self, key: str) -> tuple[int, ...]:
        return str_to_cell(key)

    def enumerate(self) -> list[tuple[int, ...]]:
        return list(itertools.product(range(self.num_ops), repeat=self.num_edges))

    def build(self, arch: Any, num_classes: int = 10, in_chans: int = 3, channels: int = 16,
              cells_per_stage: int = 5, **kwargs: Any) -> nn.Module:
        return NB201Network(cell_to_str(self._check(arch)), num_classes=num_classes, in_chans=in_chans,
                            channels=channels, cells_per_stage=cells_per_stage, **kwargs)

    def _check(self, arch: Any) -> tuple[int, ...]:
        if isinstance(arch, str):
            return str_to_cell(arch)
        cell = tuple(int(v) for v in arch)
        if len(cell) != self.num_edges or not all(0 <= v < self.num_ops for v in cell):
            raise ConfigError(f"an NB201 architecture is 6 op indices in 0..4 (or a cell string), got {arch!r}")
        return cell
