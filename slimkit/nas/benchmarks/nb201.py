"""NAS-Bench-201 as a lookup table: every cell's metrics read from CSV tables, one query = one row.

Tables are CSV files with an `arch` column (the official index 0..15624), a `cellstr` column (the official cell
string) and numeric metric columns, e.g. `cifar10valid_xvalid_200ep`, `params_M`, or one latency column per device.
Several tables are joined on `arch` (their cell strings must agree). `metric` is the objective; `costs` the columns
constraints may use (default: every other numeric column). The official NATS-Bench API can be used instead through
`NB201Benchmark.from_api` when the user has `nats_bench` installed.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import ConfigError, DataError, DataNotFoundError, MissingDependencyError
from slimkit.nas.spaces.nb201 import NB201Space, str_to_cell

__all__ = ["NB201Benchmark"]

_ID_COLUMNS = ("arch", "cellstr")


def _read_table(path: Path) -> tuple[list[str], dict[str, list[str]]]:
    if not path.is_file():
        raise DataNotFoundError(f"NAS-Bench-201 table {path} does not exist; pass the path of a CSV with columns "
                                "arch, cellstr and metric columns")
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or any(c not in header for c in _ID_COLUMNS):
                raise DataError(f"{path} is not a NAS-Bench-201 table: its header must contain 'arch' and "
                                f"'cellstr' (found {str(header)[:200]})")
            if len(set(header)) != len(header):
                raise DataError(f"{path}: the header names a column twice ({header}); give each column one name")
            cols: dict[str, list[str]] = {h: [] for h in header}
            for n, row in enumerate(reader, start=2):
                if len(row) != len(header):
                    raise DataError(f"{path} line {n} has {len(row)} fields, the header has {len(header)}; the "
                                    "file is truncated or malformed")
                for h, v in zip(header, row, strict=False):
                    cols[h].append(v)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} is not a CSV text table ({e}); pass a CSV with columns arch, cellstr and metric "
                        "columns") from None
    return header, cols


_MISSING = ("", "nan", "NaN", "NA")


def _floats(path: Path, name: str, values: list[str]) -> np.ndarray | None:
    """A numeric column (missing values: empty or nan), None for a text column; a column of numbers with one bad
    or infinite value is an error naming the line, not a column silently dropped."""
    out, bad = np.full(len(values), math.nan), []
    for i, v in enumerate(values):
        if v.strip() in _MISSING:
            continue
        try:
            out[i] = float(v)
        except ValueError:
            bad.append(i)
    numeric = len(values) - len(bad) - sum(v.strip() in _MISSING for v in values)
    if bad and not numeric:
        return None  # a text column
    if bad:
        i = bad[0]
        raise DataError(f"{path} line {i + 2}, column {name!r}: {values[i]!r} is not a number (the column's other "
                        "values are); fix the value, or leave it empty for a missing one")
    inf = np.flatnonzero(np.isinf(out))
    if len(inf):
        raise DataError(f"{path} line {inf[0] + 2}, column {name!r}: {values[inf[0]]!r} is infinite; a table holds "
                        "finite numbers (leave a cell empty when the value is missing)")
    return out


def _arch_ids(path: Path, cols: dict[str, list[str]]) -> np.ndarray:
    """The arch column as integers, each architecture (id and cell string) listed once."""
    ids = []
    for i, v in enumerate(cols["arch"]):
        try:
            ids.append(int(v))
        except ValueError:
            raise DataError(f"{path} line {i + 2}: arch {v!r} is not an integer id (NAS-Bench-201 indices are "
                            "0..15624)") from None
    first: dict[int, int] = {}
    cells: dict[str, int] = {}
    for i, (a, c) in enumerate(zip(ids, cols["cellstr"], strict=True)):
        for key, seen, what in ((a, first, f"arch {a}"), (c, cells, f"cell {c}")):
            if key in seen:
                raise DataError(f"{path} lists {what} twice (lines {seen[key] + 2} and {i + 2}); each architecture "
                                "must have one row: remove the duplicate")
            seen[key] = i  # type: ignore[index]
    return np.array(ids)


class NB201Benchmark:
    """Joined NAS-Bench-201 tables; `from_csv(paths, metric=...)` builds one, `evaluate` / `costs` look up a cell."""

    def __init__(self, cells: Sequence[tuple[int, ...]], columns: dict[str, np.ndarray], metric: str,
                 costs: Sequence[str] | None = None, arch_ids: Sequence[int] | None = None) -> None:
        self.space = NB201Space()
        if metric not in columns:
            raise ConfigError(f"metric {metric!r} is not a column of the tables; choose one of {sorted(columns)}")
        self.metric, self.columns = metric, columns
        unknown = [c for c in costs or () if c not in columns]
        if unknown:
            raise ConfigError(f"cost columns {unknown} are not in the tables; available: {sorted(columns)}")
        self.cost_names = tuple(costs) if costs is not None else tuple(c for c in columns if c != metric)
        self.row = {tuple(c): i for i, c in enumerate(cells)}
        self.arch_ids = np.asarray(arch_ids if arch_ids is not None else range(len(cells)))

    @classmethod
    def from_csv(cls, paths: str | Path | Sequence[str | Path], metric: str,
                 costs: Sequence[str] | None = None) -> NB201Benchmark:
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise ConfigError("from_csv needs at least one table path")
        ids: np.ndarray | None = None
        cells: list[str] = []
        columns: dict[str, np.ndarray] = {}
        for p in map(Path, paths):
            header, cols = _read_table(p)
            arch = _arch_ids(p, cols)
            order = np.argsort(arch)
            if ids is None:
                ids, cells = arch[order], [cols["cellstr"][i] for i in order]
            elif not np.array_equal(ids, arch[order]) or any(cells[k] != cols["cellstr"][i]
                                                              for k, i in enumerate(order)):
                raise DataError(f"{p} lists different architectures (arch/cellstr) than {paths[0]}; tables can only "
                                "be joined when they cover the same architectures")
            for h in header:
                vals = _floats(p, h, cols[h]) if h not in _ID_COLUMNS else None
                if vals is None:
                    continue
                name = h if h not in columns else f"{p.stem}:{h}"
                columns[name] = vals[order]
        assert ids is not None
        return cls([str_to_cell(c) for c in cells], columns, metric, costs, arch_ids=ids)

    @classmethod
    def from_api(cls, path: str | Path, dataset: str = "cifar10-valid", metric: str = "valid-accuracy",
                 hp: str = "200") -> NB201Benchmark:
        """Read every cell's `metric` from the official NATS-Bench topology benchmark file (needs `nats_bench`)."""
        try:
            from nats_bench import create  # type: ignore[import-not-found]
        except ImportError:
            raise MissingDependencyError("NB201Benchmark.from_api needs the official API: pip install nats_bench "
                                         "(and its benchmark file); or use from_csv with exported tables") from None
        api = create(str(path), "tss", fast_mode=True, verbose=False)
        cells, vals, params = [], [], []
        for i in range(len(api)):
            cells.append(str_to_cell(api.meta_archs[i]))
            info = api.get_more_info(i, dataset, hp=hp, is_random=False)
            vals.append(float(info[metric]))
            params.append(float(api.get_cost_info(i, dataset, hp=hp)["params"]))
        return cls(cells, {metric: np.array(vals), "params_M": np.array(params)}, metric)

    # -- the Problem interface -------------------------------------------------------------------------------------
    def _index(self, arch: Any) -> int:
        cell = self.space._check(arch)
        try:
            return self.row[cell]
        except KeyError:
            raise ConfigError(f"architecture {self.space.key(cell)} is not in the benchmark tables") from None

    def evaluate(self, arch: Any) -> dict[str, float]:
        i = self._index(arch)
        out = {name: float(v[i]) for name, v in self.columns.items()}
        out["arch"] = float(self.arch_ids[i])
        return out

    def costs(self, arch: Any) -> dict[str, float]:
        i = self._index(arch)
        return {name: float(self.columns[name][i]) for name in self.cost_names}

    def features(self, archs: Sequence[Any], names: Sequence[str]) -> np.ndarray:
        """Raw values of table columns for `archs` (n x len(names)), as training-free predictor inputs
        (`features=` of WeakNAS / BO): params, FLOPs, latency, proxy scores such as `naswot_score_v1`. The
        objective itself is refused; other accuracy columns would leak answers too, so use cost and proxy columns."""
        bad = [n for n in names if n not in self.columns]
        if bad:
            raise ConfigError(f"feature columns {bad} are not in the tables; available: {sorted(self.columns)}")
        if self.metric in names:
            raise ConfigError(f"the objective {self.metric!r} cannot be a feature (the predictor would read the "
                              "answer); use training-free columns such as params_M or naswot_score_v1")
        rows = [self._index(a) for a in archs]
        return np.stack([self.columns[n][rows] for n in names], 1) if names else np.zeros((len(rows), 0))

    def query(self, arch: Any, metric: str | None = None) -> float:
        """The value of `metric` (default: the objective) for one architecture."""
        name = metric or self.metric
        if name not in self.columns:
            raise ConfigError(f"no column {name!r}; available: {sorted(self.columns)}")
        return float(self.columns[name][self._index(arch)])

    def __len__(self) -> int:
        return len(self.row)

    def architectures(self) -> list[tuple[int, ...]]:
        return list(self.row)

    def optimum(self, metric: str | None = None, feasible: np.ndarray | None = None) -> tuple[float, list[str]]:
        """Best value of `metric` (among `feasible` rows) and the keys of every architecture that reaches it."""
        v = self.columns[metric or self.metric].copy()
        if feasible is not None:
            v[~feasible] = np.nan
        best = float(np.nanmax(v))
        cells = list(self.row)
        return best, [self.space.key(cells[i]) for i in np.flatnonzero(v == best)]
