"""The `slimkit train` job: data + model by name -> trained weights, metrics, summary in a run folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slimkit.data import make_loaders
from slimkit.jobs._common import (
    build_data,
    build_model,
    data_summary,
    load_user_weights,
    prepare_run,
    write_json,
    write_model_spec,
)
from slimkit.profile import count_macs, count_params
from slimkit.train import TrainConfig, Trainer, evaluate, save_weights
from slimkit.train.trainer import RESUMABLE

__all__ = ["TrainJobConfig", "run", "RESUMABLE_OPTIONS"]

RESUMABLE_OPTIONS = (*(f"train.{k}" for k in RESUMABLE), "workers")  # options a resumed run may change


@dataclass(frozen=True)
class TrainJobConfig:
    model: str = "resnet20"  # registered name, timm:<name> / torchvision:<name>, or path/to/net.py:build
    weights: str | None = None  # start from these weights (.safetensors or a PyTorch state dict file)
    data: str = "digits"  # dataset name (see `slimkit.data.list_datasets()`), a .npz file or an image folder
    data_root: str | None = None  # where the dataset's files are (default: the dataset's own location)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra model arguments, e.g. {"small_input": True}
    val_fraction: float = 0.1  # share of the training set held out for validation
    limit: int | None = None  # keep a class-balanced subset of this many training images
    augment: bool = True  # random crop (+ flip where label-preserving) on the training set
    input_size: tuple[int, ...] | None = None  # SIZE, (H, W) or (C, H, W): resize (C=3: grey -> RGB); None: native
    norm: str = "auto"  # auto: the model's own mean / std (timm / torchvision) else the dataset's; or dataset
    workers: int | None = None  # DataLoader worker processes (None: 2 for decoded / resized images, else 0)
    out: str = "runs/train"  # run folder: checkpoints, metrics, summary, final weights
    train: TrainConfig = field(default_factory=TrainConfig)


def run(cfg: TrainJobConfig, resume: bool = False) -> dict[str, Any]:
    """Train and test; returns (and writes to `out/summary.json`) the summary."""
    out = Path(cfg.out)
    splits = build_data(cfg.data, cfg.data_root, seed=cfg.train.seed, val_fraction=cfg.val_fraction,
                        limit=cfg.limit, augment=cfg.augment, input_size=cfg.input_size, model=cfg.model,
                        norm=cfg.norm)
    model = build_model(cfg.model, splits, cfg.model_kwargs, cfg.train.seed)
    report = load_user_weights(model, cfg.weights) if cfg.weights else None
    loaders = make_loaders(splits, cfg.train.batch_size, seed=cfg.train.seed, num_workers=cfg.workers)
    prepare_run(out, cfg, resume, RESUMABLE_OPTIONS)  # inputs are valid: now the run folder may be written
    trainer = Trainer(model, cfg.train, loaders.train, loaders.val if len(splits.val) else None, out_dir=out)
    if trainer.dist.is_main:
        write_model_spec(out, cfg.model, cfg.model_kwargs, splits, cfg.data, cfg.data_root)
    result = trainer.fit(resume=resume)
    show = cfg.train.progress and trainer.dist.is_main
    test = evaluate(model, loaders.test, progress="test set" if show else None)
    shape = (splits.info.in_chans, *splits.info.image_size)
    summary = {
        "model": cfg.model, "data": splits.info.name, "epochs": result.epochs_run, "test_acc": test["acc"],
        "test_loss": test["loss"], "best_val_acc": result.best_val_acc, "params": count_params(model),
        "macs": count_macs(model, shape), "input_size": list(shape), **data_summary(splits.info, loaders),
        "train_time_s": round(result.wall_time_s, 1),
        "out": str(out),
    }
    if report is not None:
        summary["weights"] = report.brief()
    if trainer.dist.is_main:  # under torchrun only rank 0 writes
        save_weights(model, out / "model.safetensors")
        write_json(out / "summary.json", summary)
    return summary
