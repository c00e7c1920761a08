"""`slimkit train`: train a model on a dataset; resumable; writes a run folder."""

from __future__ import annotations

from pathlib import Path

import typer

from slimkit.cli._common import (
    CONFIG_OPTION,
    INPUT_SIZE_OPTION,
    MODEL_ARG_OPTION,
    NORM_OPTION,
    WEIGHTS_OPTION,
    WORKERS_OPTION,
    console,
    job_config,
    parse_kv,
)
from slimkit.jobs.train import TrainJobConfig, run
from slimkit.report import summary_table
from slimkit.train import TrainConfig


def train_cmd(
    model: str = typer.Option(None, "--model", "-m", help="Model name (default resnet20), timm:<name>, "
                              "torchvision:<name>, or your own path/to/net.py:function."),
    weights: str = WEIGHTS_OPTION,
    data: str = typer.Option(None, "--data", "-d", help="Dataset name, .npz file or image folder (default digits)."),
    data_root: str = typer.Option(None, "--data-root", help="Folder (or file) holding the dataset."),
    epochs: int = typer.Option(None, "--epochs", "-e", help="Training epochs (default 10)."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Batch size (default 128)."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (default 0.1)."),
    optimizer: str = typer.Option(None, "--optimizer", help="sgd or adamw."),
    schedule: str = typer.Option(None, "--schedule", help="cosine, step or constant."),
    weight_decay: float = typer.Option(None, "--weight-decay", help="Weight decay (default 5e-4)."),
    label_smoothing: float = typer.Option(None, "--label-smoothing", help="Label smoothing (default 0)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default 0)."),
    limit: int = typer.Option(None, "--limit", help="Use a class-balanced subset of N training images."),
    val_fraction: float = typer.Option(None, "--val-fraction", help="Share of train held out (default 0.1)."),
    augment: bool = typer.Option(None, "--augment/--no-augment", help="Training augmentation (default on)."),
    input_size: str = INPUT_SIZE_OPTION,
    norm: str = NORM_OPTION,
    workers: int = WORKERS_OPTION,
    out: str = typer.Option(None, "--out", "-o", help="Run folder (default runs/train)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's checkpoint."),
    model_arg: list[str] = MODEL_ARG_OPTION,
    config: Path = CONFIG_OPTION,
) -> None:
    """Train a model and test it; Ctrl-C checkpoints, --resume continues exactly."""
    cli = dict(model=model, weights=weights, data=data, data_root=data_root, epochs=epochs, batch_size=batch_size,
               lr=lr,
               optimizer=optimizer, schedule=schedule, weight_decay=weight_decay, label_smoothing=label_smoothing,
               seed=seed, limit=limit, val_fraction=val_fraction, augment=augment, out=out,
               input_size=input_size, norm=norm, workers=workers,
               model_kwargs=parse_kv(model_arg) or None)
    cfg = job_config(TrainJobConfig, config, cli, {"train": TrainConfig}, resume=resume)
    summary = run(cfg, resume=resume)
    console.print(summary_table(summary, title="slimkit train"))


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
