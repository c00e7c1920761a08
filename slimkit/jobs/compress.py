"""`slimkit compress`, the main job: baseline -> prune to a budget -> fine-tune (optionally with KD from the
unpruned model) -> export ONNX -> measured report (accuracy, MACs, params, latency before/after, plots).

Every stage leaves its result in the run folder, so `resume=True` skips finished stages and continues an
interrupted training exactly.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from slimkit.data import DataSplits, make_loaders
from slimkit.distill import kd_loss_fn
from slimkit.distill.tasks import KDOptions
from slimkit.errors import CheckpointError, ConfigError
from slimkit.export import export_onnx
from slimkit.jobs import train as train_job
from slimkit.jobs._common import (
    build_data,
    build_model,
    data_summary,
    load_run_model,
    prepare_run,
    read_model_spec,
    record_model_spec,
    write_json,
    write_model_spec,
)
from slimkit.jobs.quantize import int8_note, int8_rows, int8_stage, load_int8
from slimkit.models import create_model, load_weights
from slimkit.models._user import resolve_model_name
from slimkit.nas.prune_ratios import SEARCH_IMPORTANCE, search_prune_ratios
from slimkit.profile import channel_multiple, count_macs, count_params, measure_latency
from slimkit.profile.cpu_cost import cost_breakdown
from slimkit.profile.verdict import speed_verdict
from slimkit.prune import PruneConfig, PruneJob, PruningMethod, create_importance, create_pruning_method
from slimkit.prune import load as load_pruned
from slimkit.prune import save as save_pruned
from slimkit.prune.dims import model_dimensions, require_dims
from slimkit.quantize import Int8Config, float_layer_nodes, ort_quantization
from slimkit.registry import PRUNERS
from slimkit.report import plot_bars, plot_scatter, write_html
from slimkit.train import TrainConfig, Trainer, evaluate, save_weights, seeded
from slimkit.train.distributed import is_main_process

__all__ = ["CompressConfig", "run", "RESUMABLE_OPTIONS"]

# options a resumed run may change
RESUMABLE_OPTIONS = ("finetune.epochs", "latency_batches", "workers", "quantize", "int8")
PRUNE = PruneConfig(macs_target=0.5, importance=None)  # the default pruning: half the MACs, the library's
# defaults otherwise; importance None (not given): l1, or the ratio search's own (Taylor) with ratio_search
FINETUNE = TrainConfig(epochs=5, lr=0.01)  # the default fine-tuning recipe (a tenth of training's lr)


@dataclass(frozen=True)
class CompressConfig:
    # the flat options of earlier versions: config files and run folders written with them still load (with a
    # DeprecationWarning); the command-line flags keep their names (--macs sets prune.macs_target)
    RENAMED_OPTIONS: ClassVar[dict[str, str]] = {
        "importance": "prune.importance", "macs": "prune.macs_target", "params": "prune.params_target",
        "latency_ms": "prune.latency_target", "ratio": "prune.ratio", "allocation": "prune.allocation",
        "round_to": "prune.round_to", "ignored_layers": "prune.ignored_layers", "dims": "prune.dims",
        "dim_ratios": "prune.ratios", "token_method": "prune.token_method", "finetune_epochs": "finetune.epochs",
        "finetune_lr": "finetune.lr", "kd_temperature": "distill.temperature", "kd_alpha": "distill.alpha"}

    model: str = "resnet20"  # registered model name, timm:<name> / torchvision:<name>, or path/to/net.py:build
    weights: str | None = None  # the user's trained weights for `model`: the baseline (its head fine-tuned first
    # for baseline_epochs when it was replaced for another class count)
    data: str | None = None  # dataset name, .npz file or image folder (default: the baseline's, else digits)
    data_root: str | None = None  # where the dataset's files are
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # extra model arguments
    baseline: str | None = None  # a `slimkit train` run folder to start from; None: train one here
    baseline_epochs: int = 10  # epochs of the baseline trained when `baseline` is None
    method: str = "oneshot"  # a pruning method (slimkit.prune.list_pruning_methods(): oneshot, iterative, chex)
    prune: PruneConfig = PRUNE  # what `slimkit.prune`
    # takes: one budget (default macs_target 0.5, replaced by any other), importance, allocation, round_to,
    # ignored_layers, transformer dims / per-dimension ratios, token_method; its seed is the job's `seed`
    ratio_search: bool = False  # GP-EI search of the per-dimension ratios under prune.macs_target (proxy: validation)
    search_queries: int = 24  # candidates the ratio search evaluates
    calib_batches: int = 4  # labelled batches for data-driven criteria (taylor, ...)
    distill: KDOptions | None = None  # fine-tune with knowledge distillation from the unpruned model, with these
    # options (`slimkit distill --method kd`'s; `distill: {}` or --distill: temperature 4, alpha 0.9); None: without
    finetune: TrainConfig | None = FINETUNE  # the fine-tuning recipe after pruning (None, or epochs 0: none); a
    # mapping changes only the options it names; its seed and batch_size are the job's `seed` and `batch_size`
    batch_size: int = 128  # the job's batches (baseline, pruning, fine-tuning, evaluation)
    limit: int | None = None  # class-balanced subset of training images
    val_fraction: float = 0.1
    input_size: tuple[int, ...] | None = None  # SIZE, (H, W) or (C, H, W) (default: the baseline's; else native)
    norm: str = "auto"  # auto: the model's own mean / std (timm / torchvision) else the dataset's; or dataset
    workers: int | None = None  # DataLoader worker processes (None: 2 for decoded / resized images, else 0)
    seed: int = 0  # the job's one seed: data split, baseline, pruning, fine-tuning
    latency_batches: tuple[int, ...] = (1, 32)  # batch sizes at which latency is measured
    quantize: Literal["int8"] | None = None  # after export: INT8 ONNX calibrated on training images (and
    # pruning to the channel counts of the fast INT8 kernels unless prune.kernels says otherwise)
    int8: Int8Config = field(default_factory=Int8Config)  # INT8 options (calibration, tolerance, float layers)
    out: str = "runs/compress"

    @staticmethod
    def upgrade_options(data: dict[str, Any]) -> dict[str, Any]:
        """Values of the flat layout that mean something else today: fine-tuning for 0 epochs is none, an empty
        per-dimension ratio mapping is no such budget, and distill: true / false is KD with its options or none."""
        if isinstance(data.get("distill"), bool):
            data["distill"] = {} if data["distill"] else None
        ft, pr = data.get("finetune"), data.get("prune")
        if isinstance(ft, Mapping) and ft.get("epochs") == 0:
            data["finetune"] = None
        if isinstance(pr, Mapping) and pr.get("ratios") == {}:
            data["prune"] = {**pr, "ratios": None}
        return data

    def __post_init__(self) -> None:
        if self.prune.importance is None:  # not given: the criterion of the path taken
            default = SEARCH_IMPORTANCE if self.ratio_search else PruneConfig.importance
            object.__setattr__(self, "prune", replace(self.prune, importance=default))
        self._tie("prune", seed=self.seed)
        self._tie("finetune", seed=self.seed, batch_size=self.batch_size)
        p = self.prune
        checks = [
            ("baseline_epochs", self.baseline_epochs >= 1, f"must be >= 1, got {self.baseline_epochs}"),
            ("batch_size", self.batch_size >= 1, f"must be >= 1, got {self.batch_size}"),
            ("calib_batches", self.calib_batches >= 1, f"must be >= 1, got {self.calib_batches}"),
            ("limit", self.limit is None or self.limit >= 1, f"must be >= 1, got {self.limit}"),
            ("val_fraction", 0 <= self.val_fraction < 1, f"must be in [0, 1), got {self.val_fraction}"),
            ("latency_batches", all(b >= 1 for b in self.latency_batches),
             f"must be >= 1, got {list(self.latency_batches)}"),
            ("method", self.method in PRUNERS, f"must be one of {', '.join(PRUNERS.list())}, got {self.method!r}"),
            ("prune.ratio", p.ratio != 0, "must be in (0, 1), the share of channels to remove, got 0"),
            ("search_queries", self.search_queries >= 2, "must be >= 2 (the ratio search starts from 2 random "
             f"candidates), got {self.search_queries}"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ConfigError.for_option(name, rule)
        method = PRUNERS.get(self.method)
        for name in ("allocation", "max_group_ratio"):
            if not method.allocates and getattr(p, name) != getattr(PRUNE, name):
                rule = (f"applies to methods that take an allocation: method {self.method} allocates channels itself "
                        "(globally, by importance)")
                raise ConfigError.for_option(f"prune.{name}", rule)
        try:
            if p.budget is not None:
                method().check(p.budget)
            if not self.ratio_search:  # (the search adds tokens when the model has them)
                p.check_token_options()
        except ConfigError as e:  # an option of the prune section
            e.option = f"prune.{e.option}"
            raise

    @property
    def prune_config(self) -> PruneConfig:
        """What the pruning method gets: `prune`, pruning to the channel counts of the fast INT8 kernels when the job
        quantizes to INT8 and `prune.kernels` is not given (fp32 keeps the earlier behaviour)."""
        p = self.prune
        return replace(p, kernels="int8") if p.kernels is None and self.quantize == "int8" else p

    def _tie(self, section: str, **job: Any) -> None:
        """A section's copy of a job-wide option (seed, batch_size) is the job's; a different one is refused."""
        sec = getattr(self, section)
        if sec is None:
            return
        default = {"prune": PRUNE, "finetune": FINETUNE}[section]
        for k, v in job.items():
            if getattr(sec, k) not in (v, getattr(default, k)):
                rule = f"is the job's: give {k}: {getattr(sec, k)} at the top (got {section}.{k} {getattr(sec, k)}, " \
                       f"{k} {v})"
                raise ConfigError.for_option(f"{section}.{k}", rule)
        object.__setattr__(self, section, replace(sec, **job))


def _from_weights(cfg: CompressConfig, run_dir: Path, resume: bool, console: Console) -> None:
    """The baseline is the user's model + weights, as they are; only a replaced head is first fine-tuned."""
    data = cfg.data
    splits = build_data(data, cfg.data_root, seed=cfg.seed, val_fraction=cfg.val_fraction, limit=cfg.limit,
                        augment=True, input_size=cfg.input_size, model=cfg.model, norm=cfg.norm)
    model = build_model(cfg.model, splits, dict(cfg.model_kwargs), cfg.seed)
    report = load_weights(model, cfg.weights)
    if report.head_replaced:  # the train job loads (and reports) the weights itself
        console.print(f"[bold]1/5 baseline[/]: fine-tuning {escape(cfg.model)} from {escape(cfg.weights)} on "
                      f"{escape(data)} for {cfg.baseline_epochs} epochs (its classifier was replaced)")
        job = train_job.TrainJobConfig(model=cfg.model, weights=cfg.weights, data=data, data_root=cfg.data_root,
                                       model_kwargs=dict(cfg.model_kwargs), val_fraction=cfg.val_fraction,
                                       limit=cfg.limit, out=str(run_dir), input_size=cfg.input_size,
                                       norm=cfg.norm, workers=cfg.workers,
                                       train=TrainConfig(epochs=cfg.baseline_epochs, batch_size=cfg.batch_size,
                                                         seed=cfg.seed, lr=(cfg.finetune or FINETUNE).lr))
        train_job.run(job, resume=resume)
        return
    console.print(f"[bold]1/5 baseline[/]: {escape(cfg.model)} with the weights of {escape(cfg.weights)} (no "
                  "training)")
    console.print(report.describe(), markup=False, highlight=False, soft_wrap=True)
    write_model_spec(run_dir, cfg.model, dict(cfg.model_kwargs), splits, data, cfg.data_root)
    save_weights(model, run_dir / "model.safetensors")
    write_json(run_dir / "summary.json", {"model": cfg.model, "weights": report.brief(), "epochs": 0})


def _baseline(cfg: CompressConfig, out: Path, resume: bool, console: Console) -> tuple[nn.Module, dict[str, Any]]:
    if cfg.weights:
        run_dir = out / "baseline"
        if resume and (run_dir / "summary.json").is_file():
            console.print(f"[bold]1/5 baseline[/]: already prepared in {escape(str(run_dir))}")
        else:
            _from_weights(cfg, run_dir, resume, console)
        return load_run_model(run_dir)
    if cfg.baseline:
        console.print(f"[bold]1/5 baseline[/]: loading {escape(cfg.baseline)}")
        return load_run_model(cfg.baseline)
    run_dir = out / "baseline"
    if resume and (run_dir / "summary.json").is_file():
        console.print(f"[bold]1/5 baseline[/]: already trained in {escape(str(run_dir))}")
        return load_run_model(run_dir)
    data = cfg.data or "digits"
    console.print(f"[bold]1/5 baseline[/]: training {escape(cfg.model)} on {escape(data)} for {cfg.baseline_epochs} "
                  "epochs")
    job = train_job.TrainJobConfig(model=cfg.model, data=data, data_root=cfg.data_root,
                                   model_kwargs=dict(cfg.model_kwargs), val_fraction=cfg.val_fraction,
                                   limit=cfg.limit, out=str(run_dir), input_size=cfg.input_size,
                                   norm=cfg.norm, workers=cfg.workers,
                                   train=TrainConfig(epochs=cfg.baseline_epochs, batch_size=cfg.batch_size,
                                                     seed=cfg.seed))
    train_job.run(job, resume=resume)
    return load_run_model(run_dir)


def _latency(model: nn.Module, shape: tuple[int, ...], batches: tuple[int, ...],
             step: Callable[[str], None]) -> dict[str, float]:
    out = {}
    for backend in ("torch", "onnxruntime"):
        for b in batches:
            step(f"{backend} batch {b}")
            out[f"{backend}_b{b}_ms"] = measure_latency(model, shape, backend=backend, batch=b, repeats=20,
                                                        min_time_s=0.3).median_ms
    return out


def _kept_channels(before: nn.Module, after: nn.Module) -> tuple[list[str], list[int], list[int]]:
    a = {n: m for n, m in after.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    names, b_ch, a_ch = [], [], []
    for n, m in before.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and n in a:
            names.append(n)
            b_ch.append(m.out_channels if isinstance(m, nn.Conv2d) else m.out_features)
            a_ch.append(a[n].out_channels if isinstance(a[n], nn.Conv2d) else a[n].out_features)
    return names, b_ch, a_ch


def _report(out: Path, rows: list[dict[str, Any]], layers: tuple[list[str], list[int], list[int]],
            summary: dict[str, Any]) -> None:
    figs = {"kept channels per layer": plot_bars(layers[0], {"before": layers[1], "after": layers[2]},
                                                 out / "kept_channels.png", title="output channels per layer"),
            "accuracy vs MACs": plot_scatter([{**r, "macs_M": r["macs"] / 1e6} for r in rows], "macs_M", "test_acc",
                                             out / "acc_vs_macs.png", label="model", xlabel="MACs (M)",
                                             ylabel="test accuracy")}
    int8 = summary.get("int8")
    write_json(out / "report.json", summary)
    write_html(out / "report.html", f"slimkit compress: {summary['model']} on {summary['data']}",
               tables={"before / after": rows, **(int8_rows(int8) if int8 else {})}, figures=figs,
               notes=[f"budget {summary['budget']}, importance {summary['importance']}, "
                      f"distill {summary['distill']}", f"baseline: {summary['baseline_source']}",
                      *summary["speed_verdict"], *([int8_note(int8)] if int8 else [])])


def _prune_job(cfg: CompressConfig, method: PruningMethod, base: nn.Module, spec: dict, loaders: Any,
               example: torch.Tensor, calib: list, out: Path, resume: bool) -> PruneJob:
    """What the pruning method gets: the baseline, the budget and criterion, and this job's training as hooks."""
    ft = cfg.finetune
    rounds_ft = replace(ft, epochs=max(1, ft.epochs // method.rounds), progress=False) if ft else None

    def finetune(model: nn.Module, step: int) -> None:  # between the rounds of a multi-round method
        Trainer(model, rounds_ft, loaders.train).fit()

    def fresh_model() -> nn.Module:  # trained from scratch (chex), or from the user's own weights
        with seeded(cfg.seed):
            return copy.deepcopy(base) if cfg.weights else create_model(
                spec["model"], num_classes=spec["num_classes"], in_chans=spec["in_chans"], **spec["kwargs"])

    def train(model: nn.Module, callbacks: Sequence[Any]) -> None:  # as long as the baseline trained
        tc = TrainConfig(epochs=cfg.baseline_epochs, batch_size=cfg.batch_size, seed=cfg.seed)
        Trainer(model, tc, loaders.train, callbacks=list(callbacks), out_dir=out / method.name).fit(resume=resume)

    return PruneJob(base, (example,), cfg.prune_config, data=calib, finetune=finetune if ft else None, train=train,
                    fresh_model=fresh_model, train_steps=cfg.baseline_epochs * len(loaders.train),
                    steps_per_epoch=len(loaders.train))


def _prune(cfg: CompressConfig, base: nn.Module, spec: dict, loaders: Any, example: torch.Tensor, calib: list,
           out: Path, resume: bool) -> nn.Module:
    if cfg.ratio_search:  # GP-EI over per-dimension ratios; the proxy is accuracy on held-out batches
        held_out = list(itertools.islice(iter(loaders.val if loaders.val is not None else loaders.train),
                                         cfg.calib_batches))
        p = cfg.prune
        return search_prune_ratios(base, example, macs_target=p.macs_target, data=calib, eval_data=held_out,
                                   dims=p.dims, queries=cfg.search_queries,
                                   importance=p.importance, seed=p.seed, token_method=p.token_method,
                                   round_to=p.round_to).model
    method = create_pruning_method(cfg.method)
    return method.run(_prune_job(cfg, method, base, spec, loaders, example, calib, out, resume))


def _validate(cfg: CompressConfig) -> tuple[DataSplits, dict[str, Any] | None]:
    """Check every input before any work (and before the run folder is touched): names, the baseline folder, the
    data, and that the model builds for it. Returns the data splits and the baseline's spec (None: trained here)."""
    p = cfg.prune
    create_importance(p.importance)
    if cfg.quantize:
        ort_quantization()  # installed, before hours of training that the INT8 stage would then fail after
    if (cfg.ratio_search or p.ratios or p.dims or p.token_layers) and not PRUNERS.get(cfg.method).prunes_dims:
        takes = ", ".join(f"--method {m}" for m in PRUNERS.list() if PRUNERS.get(m).prunes_dims)
        raise ConfigError(f"--dims, --dim-ratio and --ratio-search prune transformer dimensions: use them with "
                          f"{takes} (got {cfg.method!r})")
    if cfg.ratio_search and p.ratios:
        raise ConfigError("--ratio-search finds the per-dimension ratios itself: drop --dim-ratio")
    if cfg.ratio_search and (p.macs_target is None or p.macs_target > 1):
        raise ConfigError("--ratio-search finds ratios under a MACs budget: give --macs as a fraction (e.g. 0.6)")
    if cfg.weights and cfg.baseline:
        raise ConfigError("give either --weights (your model's weights file, with --model) or --baseline (a slimkit "
                          "run folder), not both")
    if cfg.weights and not cfg.data:
        raise ConfigError("--weights: name the data your model is for (--data NAME or a folder / .npz, with "
                          "--data-root where needed): its accuracy is measured, and it is fine-tuned, on that data")
    spec = None
    if cfg.baseline:
        spec = read_model_spec(cfg.baseline)
        if not (Path(cfg.baseline) / "model.safetensors").is_file():
            raise CheckpointError(f"{cfg.baseline} holds no trained model (model.safetensors missing): the run did "
                                  "not finish; continue it with --resume")
    data, root = (cfg.data, cfg.data_root) if cfg.data or spec is None else (spec.get("data") or "digits",
                                                                              spec.get("data_root"))
    splits = build_data(data or "digits", root, seed=cfg.seed, val_fraction=cfg.val_fraction, limit=cfg.limit,
                        augment=True, input_size=cfg.input_size, model=cfg.model if spec is None else None,
                        norm=cfg.norm, like=spec)
    if spec is None:
        model = build_model(cfg.model, splits, dict(cfg.model_kwargs), cfg.seed)  # the name, arguments, data fit
        if cfg.weights:
            load_weights(model, cfg.weights)  # and the user's weights fit it
    elif (splits.info.in_chans, *splits.info.image_size) != tuple(spec["input_size"]):
        raise ConfigError(f"the baseline was trained on {spec['input_size']} images ({spec.get('dataset')}) but "
                          f"--data {data} gives {[splits.info.in_chans, *splits.info.image_size]}: compress on the "
                          "data the baseline was trained on")
    if (cfg.quantize and cfg.int8.exclude) or p.ratios or p.dims:  # a baseline's model is built for these checks
        arch = model if spec is None else create_model(resolve_model_name(spec["model"], cfg.baseline),
                                                       num_classes=spec["num_classes"], in_chans=spec["in_chans"],
                                                       **spec["kwargs"])
        if cfg.quantize and cfg.int8.exclude:
            _check_float_layers(cfg, arch, splits)
        if p.ratios or p.dims:
            _check_dims(cfg, arch, splits, cfg.model if spec is None else spec["model"])
    return splits, spec


def _check_dims(cfg: CompressConfig, model: nn.Module, splits: DataSplits, name: str) -> None:
    """The dimensions --dims / --dim-ratio name are dimensions of the (untrained) model at the data's size: checked
    on its architecture before the baseline is trained, not when pruning starts after it (nor pruning nothing)."""
    p, info = cfg.prune, splits.info
    have, why = model_dimensions(model, torch.zeros(1, info.in_chans, *info.image_size))
    require_dims(p.ratios or p.dims or (), have, name, "--dim-ratio" if p.ratios else "--dims", why)


def _check_float_layers(cfg: CompressConfig, model: nn.Module, splits: DataSplits) -> None:
    """The layers INT8 is told to keep in float (int8.exclude) are layers the quantizer can keep in float: checked
    before any work, not when the INT8 stage starts after training and pruning, by the quantizer's own reading of
    the exported model (`slimkit.quantize.float_layer_nodes`)."""
    info = splits.info
    float_layer_nodes(model, torch.zeros(1, info.in_chans, *info.image_size), cfg.int8.exclude)


def _source(cfg: CompressConfig, out: Path) -> str:
    """Where the baseline came from, in words (for the report)."""
    if cfg.baseline:
        return f"run folder {cfg.baseline}"
    if not cfg.weights:
        return f"trained here for {cfg.baseline_epochs} epochs"
    done = json.loads((out / "baseline" / "summary.json").read_text())
    if done.get("epochs"):
        return (f"weights {cfg.weights}, classifier replaced (other class count) and fine-tuned for {done['epochs']} "
                "epochs")
    return f"weights {cfg.weights}, as they are (no training)"


def _int8(cfg: CompressConfig, out: Path, spec: dict[str, Any], resume: bool, console: Console) -> dict[str, Any]:
    """INT8 of the exported model, calibrated on un-augmented training images (same split as training)."""
    if resume and (done := load_int8(out, cfg.int8, out / "model.onnx", cfg.latency_batches)) is not None:
        console.print("[bold]int8[/]: already quantized")
        return done
    console.print("[bold]int8[/]: post-training quantization (onnxruntime QDQ), fp32 vs INT8 on the test set")
    data, root = (cfg.data, cfg.data_root) if cfg.data else (spec.get("data") or "digits", spec.get("data_root"))
    splits = build_data(data, root, seed=cfg.seed, val_fraction=cfg.val_fraction, limit=cfg.limit, augment=False,
                        input_size=cfg.input_size, model=cfg.model, norm=cfg.norm, like=spec)
    return int8_stage(out / "model.onnx", splits, cfg.int8, out, batch_size=cfg.batch_size, seed=cfg.seed,
                      latency_batches=cfg.latency_batches, console=console)


def run(cfg: CompressConfig, resume: bool = False, console: Console | None = None) -> dict[str, Any]:
    """Run the whole job; returns the summary also written to `out/report.json`."""
    console = console or Console(stderr=True, quiet=not is_main_process())
    out = Path(cfg.out)
    pc = cfg.prune
    budget = pc.budget.kwargs() if pc.budget is not None else {"ratios": dict(pc.ratios or {})}
    splits, _ = _validate(cfg)
    prepare_run(out, cfg, resume, RESUMABLE_OPTIONS)  # inputs are valid: now the run folder may be written
    base, spec = _baseline(cfg, out, resume, console)
    loaders = make_loaders(splits, cfg.batch_size, seed=cfg.seed, num_workers=cfg.workers)
    shape = (splits.info.in_chans, *splits.info.image_size)
    example = torch.randn(1, *shape, generator=torch.Generator().manual_seed(cfg.seed))  # not the global stream
    pruned_path = out / "pruned.safetensors"  # the weights carry their pruning record: one file, one unit
    record_kwargs = {**spec["kwargs"], "num_classes": spec["num_classes"], "in_chans": spec["in_chans"]}
    if resume and pruned_path.is_file():
        console.print("[bold]2/5 prune[/]: already pruned")
        pruned = load_pruned(pruned_path, copy.deepcopy(base))
    else:
        target = f"ratios {dict(pc.ratios)}" if pc.ratios else \
            f"{pc.budget}, ratios by GP-EI search" if cfg.ratio_search else pc.budget
        console.print(f"[bold]2/5 prune[/]: {cfg.method}, {pc.importance}, to {target}")
        calib = list(itertools.islice(iter(loaders.train), cfg.calib_batches))
        busy = console.status(f"pruning ({cfg.method}, {pc.importance})") if PRUNERS.get(cfg.method).allocates \
            else contextlib.nullcontext()  # a method that trains (chex) shows its own progress
        with busy:
            pruned = _prune(cfg, base, spec, loaders, example, calib, out, resume)
        save_pruned(pruned, pruned_path, model_name=spec["model"], model_kwargs=record_kwargs)
    acc_pruned = evaluate(pruned, loaders.test, progress="pruned: test set")["acc"]
    if cfg.finetune is not None:
        kd = cfg.distill
        console.print(f"[bold]3/5 fine-tune[/]: {cfg.finetune.epochs} epochs" + (" with KD" if kd else ""))
        loss = kd_loss_fn(copy.deepcopy(base), kd.temperature, kd.alpha) if kd is not None else None
        Trainer(pruned, cfg.finetune, loaders.train, loaders.val if len(splits.val) else None, loss_fn=loss,
                out_dir=out / "finetune").fit(resume=resume)
    else:
        console.print("[bold]3/5 fine-tune[/]: skipped (--finetune-epochs 0)")
    save_pruned(pruned, out / "model.safetensors", model_name=spec["model"], model_kwargs=record_kwargs)
    data_used = {"data": cfg.data, "data_root": cfg.data_root} if cfg.data else {}
    record_model_spec(out, {**spec, **data_used})  # a run folder: export, profile, --baseline, --teacher-ckpt
    console.print("[bold]4/5 export[/]: ONNX with onnxruntime parity check")
    with console.status("exporting model.onnx and checking it against PyTorch"):
        onnx = export_onnx(pruned, out / "model.onnx", example)
    console.print("[bold]5/5 measure[/]: accuracy, MACs, params, latency (torch and onnxruntime)")
    rows = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task("measure", total=2 * (1 + 2 * len(cfg.latency_batches)))
        for label, model in (("baseline", base), ("pruned", pruned)):
            def step(what: str, label: str = label) -> None:
                progress.update(task, description=f"{label}: {what}")
                progress.advance(task)
            step("test accuracy")
            row = {"model": label, "test_acc": evaluate(model, loaders.test)["acc"],
                   "macs": count_macs(model, example), "params": count_params(model)}
            rows.append({**row, **_latency(model, shape, cfg.latency_batches, step)})
    b, p = rows
    summary = {
        "model": spec["model"], "data": splits.info.name, "baseline_source": _source(cfg, out),
        "budget": budget, "importance": pc.importance, "distill": cfg.distill is not None, "baseline": b, "pruned": p,
        "acc_after_prune_before_finetune": acc_pruned,
        "macs_reduction": b["macs"] / p["macs"], "params_reduction": b["params"] / p["params"],
        "onnx_max_abs_diff": onnx.max_abs_diff, "input_size": list(shape), **data_summary(splits.info, loaders),
        "out": str(out),
        **{f"speedup_{k.removesuffix('_ms')}": b[k] / p[k] for k in b if k.endswith("_ms")},
    }
    summary["speed_verdict"] = speed_verdict(
        summary["macs_reduction"], {f"onnxruntime batch {n}": summary[f"speedup_onnxruntime_b{n}"]
                                    for n in cfg.latency_batches}, cost_breakdown(base, (example,)),
        cost_breakdown(pruned, (example,)), channel_multiple())
    if cfg.quantize:
        summary["int8"] = _int8(cfg, out, spec, resume, console)
    _report(out, rows, _kept_channels(base, pruned), summary)
    return summary
