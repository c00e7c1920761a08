"""The `slimkit oneshot` job: a DARTS / EoiNAS supernet search on a dataset, the derived cell looked up in NB201.

Writes, in `out/`: `config.yaml`, `checkpoint/` (after every epoch; `resume=True` continues), `summary.json` (derived
cell, alpha / softmax weights / importances per epoch, pruned ops, per-epoch losses, wall time and, with a benchmark
table, the cell's benchmark value and its rank / percentile among all cells) and `alphas.png` (softmax weight of
every op on every edge over the epochs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import ConfigError, MissingDependencyError
from slimkit.jobs._common import prepare_run, write_json
from slimkit.nas import NB201Benchmark
from slimkit.nas.oneshot import OneShotConfig, OneShotResult, OneShotSearch
from slimkit.nas.spaces.nb201 import EDGES, OPS

__all__ = ["OneShotJobConfig", "run", "benchmark_rank", "plot_alphas", "RESUMABLE_OPTIONS"]

RESUMABLE_OPTIONS = ("search.epochs", "search.data_root", "progress")  # options a resumed search may change


@dataclass(frozen=True)
class OneShotJobConfig:
    table: tuple[str, ...] = ()  # NB201 CSV tables (arch, cellstr, metric columns) to look the derived cell up in
    metric: str = "cifar10_test_200ep"  # benchmark column reported for the derived cell (higher is better)
    out: str = "runs/oneshot"
    progress: bool = True
    search: OneShotConfig = field(default_factory=OneShotConfig)

    def __post_init__(self) -> None:
        if not self.metric:
            raise ConfigError("metric must name a benchmark column, e.g. cifar10_test_200ep")


def benchmark_rank(bench: NB201Benchmark, cell: str, metric: str) -> dict[str, Any]:
    """The cell's `metric`, its rank (1 = best) among all cells of the table and its percentile (100 = best)."""
    value = bench.query(cell, metric)
    col = bench.columns[metric]
    valid = col[~np.isnan(col)]
    better = int((valid > value).sum())
    return {"metric": metric, "value": value, "rank": better + 1, "of": int(len(valid)),
            "percentile": round(100.0 * float((valid <= value).sum()) / len(valid), 2),
            "best": float(valid.max()), "median": float(np.median(valid)), "arch": int(bench.evaluate(cell)["arch"])}


def plot_alphas(result: OneShotResult, path: Path) -> Path:
    """2 x 3 panels, one per edge: the softmax weight of every op over the epochs."""
    from slimkit.report.plots import _pyplot, _save

    plt = _pyplot()
    w = np.asarray(result.weights)  # epochs x 6 x 5
    fig, axes = plt.subplots(2, 3, figsize=(11, 6), sharex=True, sharey=True)
    xs = np.arange(1, len(w) + 1)
    for e, ax in enumerate(axes.ravel()):
        for o, name in enumerate(OPS):
            ax.plot(xs, w[:, e, o], marker="o", ms=3, label=name)
        ax.set_title(f"edge {EDGES[e][0]}->{EDGES[e][1]}")
        ax.grid(alpha=0.3)
        if e >= 3:
            ax.set_xlabel("epoch")
        if e % 3 == 0:
            ax.set_ylabel("softmax weight")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{result.method}: architecture weights per edge -> {result.cell}", fontsize=9)
    return _save(fig, path)


def run(cfg: OneShotJobConfig, resume: bool = False) -> dict[str, Any]:
    """Run the search (resuming from `out/checkpoint` when asked) and write summary.json and alphas.png."""
    out = Path(cfg.out)
    bench = NB201Benchmark.from_csv(list(cfg.table), metric=cfg.metric) if cfg.table else None  # fail early
    search = OneShotSearch(cfg.search, run_dir=out, progress=cfg.progress)  # builds the data and the supernet
    prepare_run(out, cfg, resume, RESUMABLE_OPTIONS)
    result = search.fit(resume=resume)
    summary: dict[str, Any] = {"method": result.method, "cell": result.cell, "epochs": result.epochs_run,
                               "wall_time_s": round(result.wall_time_s, 2), "cells": result.cells,
                               "mask": result.mask, "pruned": result.pruned, "history": result.history,
                               "alphas": result.alphas, "weights": result.weights, "importance": result.importance,
                               "ops": list(OPS), "edges": [list(e) for e in EDGES]}
    if bench is not None and result.cell is not None:
        summary["benchmark"] = benchmark_rank(bench, result.cell, cfg.metric)
    write_json(out / "summary.json", summary)
    try:
        plot_alphas(result, out / "alphas.png")
    except MissingDependencyError:  # the plot is optional (matplotlib comes with the plot extra)
        pass
    return summary
