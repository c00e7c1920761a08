"""The `slimkit search` job: strategies x seeds on a tabular benchmark or by training, with a report.

Each (strategy, seed) search checkpoints under `out/<strategy>/seed_<n>/` after every trial, so `--resume` loses
nothing. The job writes `history.json` (every trial of every run), `summary.json` (per strategy: best score,
reported metric of the best, queries to the optimum on a benchmark), `best_so_far.png` (mean and 10-90% band over
seeds against queries) and prints a summary table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from slimkit.errors import ConfigError, MissingDependencyError
from slimkit.jobs._common import prepare_run, write_json
from slimkit.nas import NB201Benchmark, SearchResult, parse_constraints, search
from slimkit.nas.constraints import satisfies
from slimkit.nas.search import create_strategy
from slimkit.nas.train_problem import TrainProblem
from slimkit.registry import SPACES, STRATEGIES
from slimkit.report import plot_lines

__all__ = ["SearchJobConfig", "run", "RESUMABLE_OPTIONS"]

RESUMABLE_OPTIONS = ("queries", "seeds", "executor", "workers")  # a resumed search may run longer, on more seeds

TRAINING_FEATURE_POOL = 1000  # candidates ranked per iteration in a training search with features (not 20,000)


@dataclass(frozen=True)
class SearchJobConfig:
    RENAMED_OPTIONS: ClassVar[dict[str, str]] = {"budget": "queries"}  # old name kept for older configs
    benchmark: str | None = "nb201"  # tabular benchmark to query ("nb201"), or "none" to train every candidate
    table: tuple[str, ...] = ()  # the benchmark's CSV tables (arch, cellstr, metric columns), joined on arch
    metric: str = "cifar10valid_xvalid_200ep"  # objective (higher is better); training search: val_acc
    report: str | None = None  # another column to report for the best architecture (e.g. a test accuracy)
    strategies: tuple[str, ...] = ("weaknas",)  # see slimkit.nas.list_strategies()
    strategy_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # {strategy: {option: value}}
    features: tuple[str, ...] = ()  # training-free predictor inputs for weaknas / bo (table columns, costs, proxies)
    queries: int = 100  # architectures evaluated per search
    seeds: int = 1  # independent searches per strategy (seeds seed .. seed + seeds - 1)
    seed: int = 0
    constraints: tuple[str, ...] = ()  # e.g. "params_M <= 1.0", "latency_ms[pixel3] <= 10"
    executor: str = "local"  # local, process or ray
    workers: int = 2  # parallel trials for the process / ray executors
    space: str = "nb201"  # training search: the space to build candidates from
    space_kwargs: dict[str, Any] = field(default_factory=dict)  # training search: build options (channels, ...)
    data: str = "fashion-mnist"  # training search: dataset name, .npz file or image folder
    data_root: str | None = None
    limit: int | None = 3000  # training search: class-balanced training subset
    epochs: int = 2  # training search: epochs per candidate
    latency: bool = False  # training search: measure CPU latency as a cost (constraints on latency_ms)
    out: str = "runs/search"

    def __post_init__(self) -> None:
        if self.queries < 1 or self.seeds < 1:
            raise ConfigError(f"queries and seeds must be >= 1, got {self.queries} and {self.seeds}")
        if not self.strategies:
            raise ConfigError("give at least one strategy (e.g. --strategy weaknas)")
        if self.features and not any(_takes_features(s) for s in self.strategies):
            raise ConfigError(f"features {list(self.features)} are inputs of a predictor, and none of the strategies "
                              f"{list(self.strategies)} fits one: add --strategy weaknas or bo, or drop --feature")


def _takes_features(strategy: str) -> bool:
    """Strategies that fit a predictor take --feature; evolution and local search use features only with
    warm_start (give both as strategy options)."""
    return bool(getattr(STRATEGIES.get(strategy), "uses_features", False))


def build_problem(cfg: SearchJobConfig) -> Any:
    if cfg.benchmark is None or cfg.benchmark.lower() == "none":
        space = SPACES.create(cfg.space)
        metric = cfg.metric if cfg.metric in ("val_acc", "test_acc") else "val_acc"
        return TrainProblem(space, data=cfg.data, data_root=cfg.data_root, limit=cfg.limit, epochs=cfg.epochs,
                            metric=metric, build_kwargs=dict(cfg.space_kwargs), latency=cfg.latency)
    if cfg.benchmark != "nb201":
        raise ConfigError(f"unknown benchmark {cfg.benchmark!r}; tabular benchmarks: nb201 (or --benchmark none "
                          "to train candidates)")
    if not cfg.table:
        raise ConfigError("the nb201 benchmark needs its tables: --table PATH.csv (repeatable; CSVs with columns "
                          "arch, cellstr and metric columns, e.g. nb201_cifar10_200ep.csv)")
    return NB201Benchmark.from_csv(list(cfg.table), metric=cfg.metric)


def _optimum(problem: Any, constraints: tuple) -> list[str] | None:
    if not isinstance(problem, NB201Benchmark):
        return None
    cells = problem.architectures()
    mask = np.array([satisfies(problem.costs(c), constraints) for c in cells]) if constraints else None
    return problem.optimum(feasible=mask)[1]


def _summarise(name: str, results: list[SearchResult], report: str | None, optimum: list[str] | None,
               queries: int) -> dict[str, Any]:
    bests = [r.best for r in results]
    scores = [b.score for b in bests if b is not None]
    row: dict[str, Any] = {"strategy": name, "seeds": len(results),
                           "best": float(np.mean(scores)) if scores else None,
                           "best_std": float(np.std(scores)) if scores else None}
    if report:  # the reported metric of each run's best architecture, averaged over seeds
        vals = [b.metrics.get(report) for b in bests if b is not None and report in b.metrics]
        row["report"] = float(np.mean(vals)) if vals else None
    if optimum:  # queries until the optimum was evaluated, over the runs that found it
        hits = [r.queries_to(optimum) for r in results]
        found = [h for h in hits if h is not None]
        row.update({"found": f"{len(found)}/{len(hits)}", "queries": float(np.mean(found)) if found else None,
                    "queries_std": float(np.std(found)) if found else None})
    row["failed"] = sum(1 for r in results for t in r.history if t.error)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}


def _options(cfg: SearchJobConfig, name: str) -> dict[str, Any]:
    """The options of strategy `name`: its own, plus the job's features when it fits a predictor."""
    opts = dict(cfg.strategy_options.get(name, {}))
    if cfg.features and _takes_features(name):
        opts.setdefault("features", list(cfg.features))
        if cfg.benchmark is None or cfg.benchmark.lower() == "none":
            opts.setdefault("pool", TRAINING_FEATURE_POOL)  # each ranked candidate is built and scored
    return opts


def run(cfg: SearchJobConfig, resume: bool = False) -> list[dict[str, Any]]:
    """Run every (strategy, seed) search; returns the per-strategy summary rows."""
    out = Path(cfg.out)
    problem = build_problem(cfg)
    constraints = parse_constraints(cfg.constraints)
    for name in cfg.strategies:  # a bad name or option fails here, before anything is written
        create_strategy(name, problem.space, seed=cfg.seed, **_options(cfg, name))
    optimum = _optimum(problem, constraints)
    prepare_run(out, cfg, resume, RESUMABLE_OPTIONS)
    rows, history, curves, bands = [], {}, {}, {}
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, transient=False) as progress:
        for name in cfg.strategies:
            task = progress.add_task(f"{name}", total=cfg.queries * cfg.seeds)
            results = []
            for seed in range(cfg.seed, cfg.seed + cfg.seeds):
                run_dir = out / name / f"seed_{seed}"
                results.append(search(problem, name, queries=cfg.queries, seed=seed, constraints=constraints,
                                      executor=cfg.executor, workers=cfg.workers, run_dir=run_dir,
                                      resume=resume, callback=lambda t, task=task: progress.advance(task),
                                      **_options(cfg, name)))
                progress.update(task, completed=cfg.queries * (seed - cfg.seed + 1))
            rows.append(_summarise(name, results, cfg.report, optimum, cfg.queries))
            history[name] = [r.to_dict() for r in results]
            curve = np.array([np.pad(r.best_so_far(), (0, cfg.queries - len(r.history)), mode="edge")
                              for r in results])
            curves[name] = np.nanmean(curve, 0).tolist()
            bands[name] = (np.nanpercentile(curve, 10, 0).tolist(), np.nanpercentile(curve, 90, 0).tolist())
    write_json(out / "history.json", history)
    write_json(out / "summary.json", {"optimum": optimum, "rows": rows})
    try:
        plot_lines(curves, out / "best_so_far.png", bands=bands, title="best so far (mean, 10-90% over seeds)",
                   xlabel="queries", ylabel=getattr(problem, "metric", cfg.metric))
    except MissingDependencyError:  # the plot is optional (matplotlib comes with the plot extra)
        pass
    return rows
