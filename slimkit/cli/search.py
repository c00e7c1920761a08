"""`slimkit search`: architecture search on a tabular benchmark (or by training), several strategies and seeds."""

from __future__ import annotations

from pathlib import Path

import typer

from slimkit.cli._common import CONFIG_OPTION, console, job_config, one_of, parse_kv
from slimkit.jobs.search import SearchJobConfig, run
from slimkit.nas import list_strategies
from slimkit.registry import SPACES
from slimkit.report import rich_table


def search_cmd(
    benchmark: str = typer.Option(None, "--benchmark", help="Tabular benchmark: nb201 (default), or 'none' to "
                                  "train every candidate."),
    table: list[str] = typer.Option(None, "--table", help="Benchmark CSV table (repeatable; joined on arch)."),
    metric: str = typer.Option(None, "--metric", help="Objective column (higher is better)."),
    report: str = typer.Option(None, "--report", help="Column reported for the best, e.g. a test accuracy."),
    strategy: list[str] = typer.Option(None, "--strategy", "-s", help=f"{one_of(list_strategies())} "
                                       "(repeatable; default weaknas)."),
    option: list[str] = typer.Option(None, "--option", help="Strategy option KEY=VALUE for every strategy "
                                     "(repeatable), e.g. --option top_m=50."),
    feature: list[str] = typer.Option(None, "--feature", help="Training-free predictor input for weaknas / bo "
                                      "(repeatable): a table column such as naswot_score_v1 or params_M; in a "
                                      "training search params_M, macs_M or the proxy naswot."),
    queries: int = typer.Option(None, "--queries", "--budget", "-n", help="Architectures evaluated per search "
                                "(default 100; --budget is the old name)."),
    seeds: int = typer.Option(None, "--seeds", help="Independent searches per strategy (default 1)."),
    seed: int = typer.Option(None, "--seed", help="First seed (default 0)."),
    constraint: list[str] = typer.Option(None, "--constraint", help="Cost constraint, e.g. 'params_M <= 1.0' or "
                                         "'latency_ms[pixel3] <= 10' (repeatable)."),
    executor: str = typer.Option(None, "--executor", help="local, process or ray."),
    workers: int = typer.Option(None, "--workers", help="Parallel trials for process / ray (default 2)."),
    space: str = typer.Option(None, "--space", help=f"Training search: the space, "
                             f"{one_of(SPACES.list(), 'nb201')}."),
    space_arg: list[str] = typer.Option(None, "--space-arg", help="Training search: build option KEY=VALUE."),
    data: str = typer.Option(None, "--data", "-d", help="Training search: dataset (default fashion-mnist)."),
    data_root: str = typer.Option(None, "--data-root", help="Training search: folder holding the dataset."),
    limit: int = typer.Option(None, "--limit", help="Training search: training images (default 3000)."),
    epochs: int = typer.Option(None, "--epochs", "-e", help="Training search: epochs per candidate (default 2)."),
    latency: bool = typer.Option(None, "--latency/--no-latency", help="Training search: measure CPU latency "
                                 "(batch 1) of every candidate, usable in constraints as latency_ms."),
    out: str = typer.Option(None, "--out", "-o", help="Run folder (default runs/search)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the searches saved in the run folder."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Search architectures; checkpoints after every trial, --resume continues; writes history, summary, plot."""
    options = parse_kv(option)
    strategies = tuple(strategy) if strategy else None
    cli = dict(table=tuple(table) if table else None, metric=metric, report=report, strategies=strategies,
               queries=queries, seeds=seeds, seed=seed, constraints=tuple(constraint) if constraint else None,
               executor=executor, workers=workers, space=space, space_kwargs=parse_kv(space_arg) or None, data=data,
               data_root=data_root, limit=limit, epochs=epochs, latency=latency, out=out,
               strategy_options={s: options for s in strategies or ("weaknas",)} if options else None,
               benchmark=benchmark, features=tuple(feature) if feature else None)
    cfg = job_config(SearchJobConfig, config, cli, resume=resume)
    rows = run(cfg, resume=resume)
    console.print(rich_table(rows, title=f"slimkit search ({cfg.queries} queries x {cfg.seeds} seeds)"))
    console.print(f"history, summary and best_so_far.png in {cfg.out}")


def register(app: typer.Typer) -> None:
    app.command("search")(search_cmd)
