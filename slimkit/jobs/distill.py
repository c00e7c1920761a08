"""`slimkit distill`: teacher (loaded, or trained here) -> student trained with a distillation method -> measured
summary (accuracy or linear-probe accuracy, MACs, params, wall time, teacher forward passes) in a run folder.

The run folder is a `slimkit train` run folder too (`model.json` + `model.safetensors`), so a distilled student is
a ready baseline for `slimkit compress --baseline`. `store_logits` is the `slimkit distill store-logits` job.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from torch import nn
from torch.utils.data import DataLoader, Subset

from slimkit.config import to_dict
from slimkit.data import DataSplits, default_workers, make_loaders, with_index
from slimkit.distill import linear_probe, write_logit_store
from slimkit.distill.tasks import (
    DistillOptions,
    create_distill_task,
    freeze,
    list_distillers,
    method_options,
    method_traits,
)
from slimkit.errors import ConfigError
from slimkit.jobs import train as train_job
from slimkit.jobs._common import (
    build_data,
    build_model,
    data_summary,
    load_run_model,
    load_user_weights,
    prepare_run,
    read_model_spec,
    write_json,
    write_model_spec,
)
from slimkit.jobs.train import RESUMABLE_OPTIONS
from slimkit.models import load_weights
from slimkit.profile import count_macs, count_params
from slimkit.prune import load as load_pruned
from slimkit.prune.io import read_record
from slimkit.train import TrainConfig, Trainer, evaluate, save_weights, seeded
from slimkit.train.distributed import is_main_process

__all__ = ["DistillJobConfig", "StoreLogitsConfig", "load_teacher", "run", "store_logits", "RESUMABLE_OPTIONS"]


@dataclass(frozen=True)
class DistillJobConfig:
    student: str = "resnet20"  # registered model name, timm:<name> / torchvision:<name>, or path/to/net.py:build
    weights: str | None = None  # the student starts from these weights (.safetensors or a PyTorch state dict)
    teacher: str | None = "resnet56"  # teacher model name; None for teacher-free methods (none, tfkd, stored)
    teacher_ckpt: str | None = None  # a slimkit run folder or a .safetensors file; None: train one here
    teacher_weights: str | None = None  # or: the user's weights file for `teacher`, used as they are (a classifier
    # replaced for another class count is first fine-tuned for teacher_epochs)
    teacher_epochs: int = 10  # epochs of the teacher trained here when teacher_ckpt is None
    method: str = "kd"  # a registered method: `slimkit.distill.list_distillers()` (kd, feature, stored, seed, ...)
    data: str = "digits"  # dataset name, .npz file or image folder
    data_root: str | None = None  # where the dataset's files are
    student_kwargs: dict[str, Any] = field(default_factory=dict)  # extra student arguments
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)  # extra teacher arguments
    options: Any = None  # the method's options: its DistillOptions subclass, a mapping of them, or None (defaults)
    topk: int = 10  # stored: top-k logits written when the job builds the store itself
    store_epochs: int | None = None  # stored: augmentation epochs stored (None: all; fewer are replayed in turn)
    limit: int | None = None  # class-balanced subset of training images
    val_fraction: float = 0.1  # share of the training set held out for validation
    augment: bool = True  # random crop (+ flip) on the training set
    input_size: tuple[int, ...] | None = None  # SIZE, (H, W) or (C, H, W) (default: the teacher run's; else native)
    norm: str = "auto"  # auto: the teacher's (else the student's) own mean / std, else the dataset's; or dataset
    workers: int | None = None  # DataLoader worker processes (None: 2 for decoded / resized images, else 0)
    probe_limit: int | None = 5000  # seed: training images used to fit the linear probe (None: all)
    out: str = "runs/distill"  # run folder
    train: TrainConfig = field(default_factory=TrainConfig)  # the student's training

    def __post_init__(self) -> None:
        if self.method not in list_distillers():
            raise ConfigError(f"unknown distillation method {self.method!r}: use one of {list_distillers()}",
                              option="method", detail=f"must be one of {list_distillers()}, got {self.method!r}")
        object.__setattr__(self, "options", method_options(self.method, self.options))  # frozen: set once, here
        checks = [("teacher_epochs", self.teacher_epochs >= 1, f"must be >= 1, got {self.teacher_epochs}"),
                  ("topk", self.topk >= 1, f"must be >= 1, got {self.topk}"),
                  ("limit", self.limit is None or self.limit >= 1, f"must be >= 1, got {self.limit}"),
                  ("val_fraction", 0 <= self.val_fraction < 1, f"must be in [0, 1), got {self.val_fraction}"),
                  ("store_epochs", self.store_epochs is None or self.store_epochs >= 1,
                   f"must be >= 1, got {self.store_epochs}")]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError.for_option(name, rule)


@dataclass(frozen=True)
class StoreLogitsConfig:
    teacher: str = "resnet56"  # teacher model name
    teacher_ckpt: str | None = None  # a slimkit run folder or a weights file (required)
    teacher_kwargs: dict[str, Any] = field(default_factory=dict)
    data: str = "digits"
    data_root: str | None = None
    limit: int | None = None  # must match the student's run (the store checks the dataset fingerprint)
    val_fraction: float = 0.1
    augment: bool = True
    input_size: tuple[int, ...] | None = None  # as the student's run (default: the teacher run's; else native)
    norm: str = "auto"  # as the student's run
    workers: int | None = None  # DataLoader worker processes (None: 2 for decoded / resized images, else 0)
    seed: int = 0  # the training seed of the student's run (it fixes the augmentation replayed from the store)
    epochs: int = 10  # augmentation epochs to store (>= the student's epochs)
    topk: int = 10
    batch_size: int = 256
    out: str = "runs/logits"


def load_teacher(name: str, ckpt: str | None, splits: DataSplits, kwargs: dict[str, Any],
                 console: Console | None = None) -> nn.Module:
    """A frozen teacher from a slimkit run folder (`train`, `distill`, or `compress`: rebuilt from its pruning
    record), pruned .safetensors, or a weights file of `name` built for the data (its classifier must fit)."""
    if ckpt is None:
        raise ConfigError("the teacher needs weights: --teacher-ckpt <run folder or weights file>")
    path = Path(ckpt)
    pruned = path / "model.safetensors" if path.is_dir() else path
    if pruned.is_file() and read_record(pruned) is not None:  # a pruned model: its record names the original
        model = load_pruned(pruned)
        if getattr(model, "num_classes", splits.info.num_classes) != splits.info.num_classes:
            raise ConfigError(f"the pruned teacher {pruned} predicts {model.num_classes} classes, the data has "
                              f"{splits.info.num_classes}: distil on the teacher's data")
        return freeze(model)
    if path.is_dir():
        model, spec = load_run_model(path)
        if spec["num_classes"] != splits.info.num_classes or spec["in_chans"] != splits.info.in_chans:
            raise ConfigError(f"the teacher in {path} was trained for {spec['num_classes']} classes / "
                              f"{spec['in_chans']} channels, the data has {splits.info.num_classes} / "
                              f"{splits.info.in_chans}: distil on the teacher's data")
        return freeze(model)
    model = build_model(name, splits, kwargs, seed=0)  # the weights come from the file
    if load_user_weights(model, str(path), console).head_replaced:
        raise ConfigError(f"the teacher's classifier in {path} predicts another number of classes than the data has "
                          f"({splits.info.num_classes}): pass it as --teacher-weights to fine-tune its classifier "
                          "for --teacher-epochs first")
    return freeze(model)


def _data(cfg: DistillJobConfig | StoreLogitsConfig, seed: int, teacher: str | None, ckpt: str | None,
          student: str | None) -> DataSplits:
    """One dataset for teacher and student (they see the same batches): at the teacher run's input size and
    normalisation when the teacher is a run folder, else normalised as the teacher's (or the student's) model."""
    like = read_model_spec(ckpt) if teacher and ckpt and (Path(ckpt) / "model.json").is_file() else None
    return build_data(cfg.data, cfg.data_root, seed=seed, val_fraction=cfg.val_fraction, limit=cfg.limit,
                      augment=cfg.augment, input_size=cfg.input_size, model=teacher or student, norm=cfg.norm,
                      like=like)


def _teacher(cfg: DistillJobConfig, splits: DataSplits, out: Path, resume: bool, console: Console) -> nn.Module:
    assert cfg.teacher is not None
    if cfg.teacher_ckpt is not None:
        console.print(f"[bold]teacher[/]: {escape(cfg.teacher)} from {escape(cfg.teacher_ckpt)}")
        return load_teacher(cfg.teacher, cfg.teacher_ckpt, splits, cfg.teacher_kwargs, console)
    if cfg.teacher_weights is not None:
        teacher = build_model(cfg.teacher, splits, cfg.teacher_kwargs, seed=0)  # the weights come from the file
        report = load_weights(teacher, cfg.teacher_weights)
        if not report.head_replaced:
            console.print(f"[bold]teacher[/]: {escape(cfg.teacher)} with the weights of "
                          f"{escape(cfg.teacher_weights)}")
            console.print(report.describe(), markup=False, highlight=False, soft_wrap=True)
            return freeze(teacher)
    run_dir = out / "teacher"
    if not (resume and (run_dir / "summary.json").is_file()):
        start = f" from {cfg.teacher_weights} (its classifier was replaced)" if cfg.teacher_weights else ""
        console.print(f"[bold]teacher[/]: training {escape(cfg.teacher)}{escape(start)} on {escape(cfg.data)} for "
                      f"{cfg.teacher_epochs} epochs")
        job = train_job.TrainJobConfig(model=cfg.teacher, weights=cfg.teacher_weights, data=cfg.data,
                                       data_root=cfg.data_root,
                                       model_kwargs=dict(cfg.teacher_kwargs), val_fraction=cfg.val_fraction,
                                       limit=cfg.limit, augment=cfg.augment, out=str(run_dir),
                                       input_size=cfg.input_size, norm=cfg.norm, workers=cfg.workers,
                                       train=replace(cfg.train, epochs=cfg.teacher_epochs))
        train_job.run(job, resume=resume)
    return freeze(load_run_model(run_dir)[0])


def _unaugmented(dataset: Any) -> Any:
    """A shallow copy of `dataset` with its augmentation switched off (the images themselves are shared)."""
    clean = copy.copy(dataset)
    if hasattr(clean, "augment"):
        clean.augment = False
    return clean


def _probe(backbone: nn.Module, splits: DataSplits, cfg: DistillJobConfig) -> float:
    clean = _unaugmented(splits.train)  # probe on un-augmented images
    if cfg.probe_limit is not None and len(clean) > cfg.probe_limit:
        clean = Subset(clean, torch.randperm(len(clean), generator=torch.Generator().manual_seed(0))
                       [:cfg.probe_limit].tolist())
    bs = cfg.train.batch_size
    return linear_probe(backbone, DataLoader(clean, batch_size=bs), DataLoader(splits.test, batch_size=bs))


def _store_for(cfg: DistillJobConfig, splits: DataSplits, teacher: nn.Module | None, out: Path,
               console: Console) -> tuple[DistillOptions, int, float]:
    """A store-reading method ('stored') without a store: write one here with the teacher (what a separate
    store-logits does). Returns the options pointing at it, the teacher forward passes and the seconds it took."""
    if cfg.options.store is not None:
        return cfg.options, 0, 0.0
    if teacher is None:
        raise ConfigError(f"method {cfg.method!r} needs --store <folder> or a teacher to build the store with")
    clean = cfg.options.store_views == "clean"  # one pass over the un-augmented images
    epochs = 1 if clean else min(cfg.store_epochs or cfg.train.epochs, cfg.train.epochs)
    images = _unaugmented(splits.train) if clean else splits.train
    console.print(f"[bold]logit store[/]: teacher top-{cfg.topk} over "
                  + ("the un-augmented images" if clean else f"{epochs} augmentation epochs"))
    t0 = time.perf_counter()
    write_logit_store(teacher, images, out / "logits", epochs, cfg.topk,
                      batch_size=max(cfg.train.batch_size, 256), progress=cfg.train.progress,
                      num_workers=default_workers(images) if cfg.workers is None else cfg.workers)
    opts = replace(cfg.options, store=str(out / "logits"), cycle_store=cfg.options.cycle_store or
                   epochs < cfg.train.epochs)
    return opts, epochs * len(splits.train), time.perf_counter() - t0


def run(cfg: DistillJobConfig, resume: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Run the job; returns the summary also written to `out/summary.json`."""
    console = console or Console(stderr=True, quiet=not is_main_process())
    if cfg.teacher_ckpt and cfg.teacher_weights:
        raise ConfigError("give the teacher either --teacher-ckpt (a run folder or ready weights) or "
                          "--teacher-weights (weights to start from), not both")
    out = Path(cfg.out)
    traits = method_traits(cfg.method)
    wants_teacher = traits["teacher"] or (traits["store"] and cfg.options.store is None)  # a store to build here
    splits = _data(cfg, cfg.train.seed, cfg.teacher if wants_teacher else None, cfg.teacher_ckpt, cfg.student)
    student = build_model(cfg.student, splits, cfg.student_kwargs, cfg.train.seed)  # fail on a bad name first
    if cfg.weights:
        load_weights(student, cfg.weights)  # ... and on weights that do not fit
    if wants_teacher and cfg.teacher:
        if cfg.teacher_ckpt is None:
            teacher = build_model(cfg.teacher, splits, cfg.teacher_kwargs, cfg.train.seed)
            if cfg.teacher_weights:
                load_weights(teacher, cfg.teacher_weights)
        else:
            load_teacher(cfg.teacher, cfg.teacher_ckpt, splits, cfg.teacher_kwargs, Console(quiet=True))
    prepare_run(out, cfg, resume, RESUMABLE_OPTIONS)  # inputs are valid: now the run folder may be written
    teacher = _teacher(cfg, splits, out, resume, console) if wants_teacher and cfg.teacher else None
    opts, store_forwards, store_s = _store_for(cfg, splits, teacher, out, console) if traits["store"] \
        else (cfg.options, 0, 0.0)
    shape = (splits.info.in_chans, *splits.info.image_size)
    teacher_acc = None
    if teacher is not None and traits["supervised"]:  # an embedding teacher (SEED) has no accuracy to check
        teacher_acc = evaluate(teacher, make_loaders(splits, cfg.train.batch_size, num_workers=cfg.workers).test,
                               progress="teacher: test set" if cfg.train.progress else None)["acc"]
        if teacher_acc < 2.0 / splits.info.num_classes:
            console.print(f"[yellow]warning: the teacher's test accuracy is {teacher_acc:.3f}, near chance "
                          f"({1 / splits.info.num_classes:.3f}); distilling from it will hurt the student. Train it "
                          "longer (--teacher-epochs) or with a lower --lr, or pass a better --teacher-ckpt[/]")
    with seeded(cfg.train.seed):  # the student and any module the method adds (adapter, head) start from the seed
        student = build_model(cfg.student, splits, cfg.student_kwargs, cfg.train.seed)
        weights = load_user_weights(student, cfg.weights, console) if cfg.weights else None
        task = create_distill_task(cfg.method, student, teacher, opts, example=torch.randn(2, *shape))
    train_set = with_index(splits.train) if task.needs_index else splits.train
    loaders = make_loaders(replace(splits, train=train_set), cfg.train.batch_size, seed=cfg.train.seed,
                           num_workers=cfg.workers)
    val = loaders.val if task.supervised and len(splits.val) else None
    write_model_spec(out, cfg.student, cfg.student_kwargs, splits, cfg.data, cfg.data_root)
    console.print(f"[bold]student[/]: {escape(cfg.student)} with {cfg.method} for {cfg.train.epochs} epochs")
    t0 = time.perf_counter()
    result = Trainer(task.model, cfg.train, loaders.train, val, loss_fn=task.loss_fn, callbacks=task.callbacks,
                     out_dir=out / "student").fit(resume=resume)
    save_weights(task.student, out / "model.safetensors")
    summary: dict[str, Any] = {
        "method": cfg.method, "student": cfg.student, "teacher": cfg.teacher if teacher is not None else None,
        "data": splits.info.name, "epochs": result.epochs_run, "train_time_s": round(result.wall_time_s, 1),
        "wall_time_s": round(time.perf_counter() - t0 + store_s, 1),
        "teacher_forward_passes": int(task.teacher_forwards_per_image * result.epochs_run * len(splits.train))
        + store_forwards,
        "student_params": count_params(task.student), "student_macs": count_macs(task.student, shape),
        "options": to_dict(opts), "input_size": list(shape), **data_summary(splits.info, loaders), "out": str(out),
    }
    if weights is not None:
        summary["weights"] = weights.brief()
    if task.supervised:
        summary["test_acc"] = evaluate(task.student, loaders.test,
                                       progress="student: test set" if cfg.train.progress else None)["acc"]
        summary["best_val_acc"] = result.best_val_acc
    else:
        summary["probe_acc"] = _probe(task.student, splits, cfg)
    if teacher is not None:
        summary["teacher_params"] = count_params(teacher)
        summary["teacher_macs"] = count_macs(teacher, shape)
        summary["teacher_test_acc"] = teacher_acc
    write_json(out / "summary.json", summary)
    return summary


def store_logits(cfg: StoreLogitsConfig, console: Console | None = None) -> dict[str, Any]:
    """Write (or resume / extend) a logit store of the teacher's top-k over `epochs` augmented passes."""
    console = console or Console(stderr=True, quiet=not is_main_process())
    splits = _data(cfg, cfg.seed, cfg.teacher, cfg.teacher_ckpt, None)
    teacher = load_teacher(cfg.teacher, cfg.teacher_ckpt, splits, cfg.teacher_kwargs, console)
    t0 = time.perf_counter()
    write_logit_store(teacher, splits.train, cfg.out, cfg.epochs, cfg.topk, batch_size=cfg.batch_size,
                      num_workers=default_workers(splits.train) if cfg.workers is None else cfg.workers)
    summary = {"store": cfg.out, "images": len(splits.train), "epochs": cfg.epochs, "topk": cfg.topk,
               "teacher": cfg.teacher, "data": splits.info.name, "seconds": round(time.perf_counter() - t0, 1),
               "bytes": sum(p.stat().st_size for p in Path(cfg.out).iterdir() if p.is_file())}
    write_json(Path(cfg.out) / "summary.json", summary)
    return summary
