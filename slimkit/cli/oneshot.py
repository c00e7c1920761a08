"""`slimkit oneshot`: DARTS / EoiNAS one-shot search of a NAS-Bench-201 cell on a dataset."""

from __future__ import annotations

from pathlib import Path

import typer

from slimkit.cli._common import CONFIG_OPTION, console, job_config, one_of
from slimkit.jobs.oneshot import OneShotJobConfig, run
from slimkit.nas.oneshot import METHODS, OneShotConfig
from slimkit.report import rich_table


def oneshot_cmd(
    method: str = typer.Option(None, "--method", help=f"{one_of(METHODS, 'darts')}. darts: argmax alpha; eoinas: "
                                "importance + gradual op pruning."),
    data: str = typer.Option(None, "--data", "-d", help="Dataset (default fashion-mnist)."),
    data_root: str = typer.Option(None, "--data-root", help="Folder holding the dataset."),
    limit: int = typer.Option(None, "--limit", help="Images used, split into weight / alpha halves (default 2000)."),
    epochs: int = typer.Option(None, "--epochs", "-e", help="Search epochs (default 10)."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Batch size (default 64)."),
    lr: float = typer.Option(None, "--lr", help="Weight learning rate (SGD, cosine; default 0.025)."),
    arch_lr: float = typer.Option(None, "--arch-lr", help="Alpha learning rate (Adam; default 3e-4)."),
    channels: int = typer.Option(None, "--channels", help="Supernet channels (default 16)."),
    cells_per_stage: int = typer.Option(None, "--cells-per-stage", help="Cells per stage (default 2)."),
    prune_every: int = typer.Option(None, "--prune-every", help="eoinas: epochs between prune rounds."),
    seed: int = typer.Option(None, "--seed", help="Seed (default 0)."),
    table: list[str] = typer.Option(None, "--table", help="NB201 CSV table to look the cell up in (repeatable)."),
    metric: str = typer.Option(None, "--metric", help="Benchmark column reported (default cifar10_test_200ep)."),
    out: str = typer.Option(None, "--out", "-o", help="Run folder (default runs/oneshot)."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bars."),
    resume: bool = typer.Option(False, "--resume", help="Continue the search saved in the run folder."),
    config: Path = CONFIG_OPTION,
) -> None:
    """One-shot cell search (checkpoints every epoch, --resume continues); writes summary.json and alphas.png."""
    cli = dict(method=method, data=data, data_root=data_root, limit=limit, epochs=epochs, batch_size=batch_size,
               lr=lr, arch_lr=arch_lr, channels=channels, cells_per_stage=cells_per_stage, prune_every=prune_every,
               seed=seed, table=tuple(table) if table else None, metric=metric, out=out,
               progress=False if no_progress else None)
    cfg = job_config(OneShotJobConfig, config, cli, {"search": OneShotConfig}, resume=resume)
    summary = run(cfg, resume=resume)
    row = {"method": summary["method"], "cell": summary["cell"], "epochs": summary["epochs"],
           "wall_time_s": summary["wall_time_s"]}
    if "benchmark" in summary:
        b = summary["benchmark"]
        row.update({b["metric"]: round(b["value"], 2), "rank": f"{b['rank']}/{b['of']}",
                    "percentile": b["percentile"]})
    console.print(rich_table([row], title=f"slimkit oneshot ({summary['method']})"))
    console.print(f"summary.json and alphas.png in {cfg.out}")


def register(app: typer.Typer) -> None:
    app.command("oneshot")(oneshot_cmd)
