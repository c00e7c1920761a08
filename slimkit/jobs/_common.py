"""Helpers shared by jobs: building data and models from names, run folders, reloading trained models.

A run folder belongs to one run: `prepare_run` is called by every job once its inputs are validated and before it
writes anything. It refuses a new run in a folder that holds one, and a resumed run whose options differ from the
folder's `config.yaml` (except options that are safe to change); then it writes `config.yaml`.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from rich.console import Console
from torch import nn

from slimkit.config import config_changes, to_dict
from slimkit.data import DatasetInfo, DataSplits, create_dataset
from slimkit.errors import CheckpointError, ConfigError, ModelError
from slimkit.fileio import atomic_write
from slimkit.inputs import size_hint
from slimkit.models import LoadReport, create_model, is_file_spec, load_weights, model_data_config, model_info
from slimkit.models._user import copy_model_file, resolve_model_name
from slimkit.prune.io import load as load_pruned
from slimkit.prune.io import read_record
from slimkit.train import seeded
from slimkit.train.distributed import is_main_process

__all__ = ["build_data", "build_model", "check_classifier", "load_user_weights", "model_with_weights",
           "write_model_spec", "record_model_spec", "read_model_spec", "load_run_model", "inspect_model", "write_json",
           "write_config", "prepare_run", "read_run_config", "view_spec", "data_summary"]

MODEL_SPEC = "model.json"
CONFIG = "config.yaml"


def build_data(name: str, root: str | None, *, seed: int, val_fraction: float, limit: int | None,
               augment: bool, input_size: Any = None, model: str | None = None, norm: str = "auto",
               like: dict[str, Any] | None = None) -> DataSplits:
    """The job's data at `input_size` (None: native size), normalised with `model`'s own mean / std when it has
    them (timm / torchvision; `norm="dataset"` forces the train-split statistics). `like`, a run's model.json,
    fixes the input size, view and normalisation the run was trained with (compressing / distilling from it)."""
    if norm not in ("auto", "dataset"):
        raise ConfigError(f"norm must be 'auto' (the model's own mean / std, else the dataset's) or 'dataset', got "
                          f"{norm!r}")
    view = (like or {}).get("view") or {}
    kw: dict[str, Any] = {"input_size": view.get("input_size") if input_size is None else input_size}
    if view:
        kw.update(crop_pct=view["crop_pct"], scale=tuple(view["scale"]), interpolation=view["interpolation"])
    cfg = model_data_config(model) if model and norm == "auto" else None
    if like is not None and like.get("mean") is not None:
        kw.update(mean=like["mean"], std=like["std"])
        source = like.get("norm") or "dataset"
    elif cfg is not None:
        kw.update(mean=cfg["mean"], std=cfg["std"])
        if not view:
            kw.update(crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"])
        source = cfg["source"]
    else:
        source = "dataset"
    splits = create_dataset(name, root, seed=seed, val_fraction=val_fraction, limit=limit, augment=augment, **kw)
    return replace(splits, info=replace(splits.info, norm=source))


def data_summary(info: DatasetInfo, loaders: Any) -> dict[str, Any]:
    """What the data fed the model, for summaries: channel conversion, normalisation source, view, workers."""
    out: dict[str, Any] = {"norm": info.norm, "workers": loaders.train.num_workers}
    if info.view is not None:
        out["view"] = info.view.describe()
    if info.source_chans is not None and info.source_chans != info.in_chans:
        out["channels"] = f"{info.source_chans}-channel images converted to {info.in_chans} channels"
    return out


def view_spec(info: DatasetInfo) -> dict[str, Any] | None:
    """The resize / crop settings of `info` as JSON (None: native size), as model.json records them."""
    v = info.view
    if v is None:
        return None
    return {"input_size": [info.in_chans, *v.size], "crop_pct": v.crop_pct, "scale": list(v.scale),
            "interpolation": v.interpolation}


def build_model(name: str, splits: DataSplits, kwargs: dict[str, Any], seed: int) -> nn.Module:
    """A registered (or timm:/torchvision:, or net.py:build) model sized for the dataset's classes and channels, its
    weights initialised from `seed` (so one seed gives one model, whatever ran before)."""
    with seeded(seed):
        model = create_model(name, num_classes=splits.info.num_classes, in_chans=splits.info.in_chans, **kwargs)
    check_classifier(model, name, splits.info)
    return model


def check_classifier(model: nn.Module, name: str, info: DatasetInfo) -> None:
    """Run `model` once on two blank images of the data's size (eval mode, no gradient, the random streams left as
    they were): a model that fails at that size, or does not return N x classes logits, is a ModelError before any
    work, not a traceback from deep inside training (nor a 1000-way classifier trained on 10 classes)."""
    shape = (2, info.in_chans, *info.image_size)
    size = "x".join(map(str, shape[1:]))
    was = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            out = model(torch.zeros(shape))
    except Exception as e:  # noqa: BLE001 - whatever the model's forward raises
        why = (str(e).strip().splitlines() or [""])[0][:200]
        raise ModelError(f"{name} fails on {size} inputs ({type(e).__name__}: {why}): give the --input-size it takes "
                         f"(or fix the model for this size){size_hint(model, (torch.zeros(shape),))}") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, info.num_classes):
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}"
        raise ModelError(f"{name} returns {got} for 2 images of {size}, but a classifier of {info.name} returns N x "
                         f"{info.num_classes} logits (one per class): return the logits only, and build the head "
                         "with num_classes (a model file's function gets num_classes when it takes it)")


def load_user_weights(model: nn.Module, weights: str, console: Console | None = None) -> LoadReport:
    """Load a user's weights file into `model` and print what was loaded, replaced (transfer learning), adapted."""
    report = load_weights(model, weights)
    console = console or Console(stderr=True, quiet=not is_main_process())
    console.print(report.describe(), markup=False, highlight=False, soft_wrap=True)
    return report


def model_with_weights(name: str, weights: str | None, num_classes: int | None, in_chans: int,
                       kwargs: dict[str, Any], console: Console | None = None) -> tuple[nn.Module, LoadReport | None]:
    """A model with the user's weights for inspection (profile, export): without `num_classes` it takes the class
    count of the file's classifier, so nothing is replaced; a first conv of other channels is adapted and said so."""
    model = create_model(name, num_classes=num_classes or 10, in_chans=in_chans, **kwargs)
    if not weights:
        return model, None
    report = load_weights(model, weights)
    if report.head_replaced and num_classes is None and report.file_classes:
        model = create_model(name, num_classes=report.file_classes, in_chans=in_chans, **kwargs)
        report = load_weights(model, weights)
    (console or Console(stderr=True)).print(report.describe(), markup=False, highlight=False, soft_wrap=True)
    return model, report


def write_json(path: Path, data: Any) -> Path:
    return atomic_write(path, json.dumps(data, indent=2, default=str))


def write_config(path: Path, cfg: Any) -> Path:
    return atomic_write(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def read_run_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The options a run folder's run was started with (its config.yaml), or None when it holds no run."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    try:
        saved = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path} is corrupt ({e}); delete the run folder {run_dir} to start again") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} is corrupt (not a mapping); delete the run folder {run_dir} to start again")
    return saved


def prepare_run(out: Path, cfg: Any, resume: bool, allowed: tuple[str, ...] = ()) -> None:
    """Claim run folder `out` for `cfg` (see the module docstring). `allowed`: options that may change on resume."""
    if not is_main_process():  # under torchrun rank 0 checks and writes
        return
    saved = read_run_config(out)
    if saved is not None and not resume:
        raise CheckpointError(f"{out} already holds a run ({CONFIG}): continue it with --resume, or start a new run "
                              f"with another --out (or delete {out})")
    if saved is not None:
        changes = config_changes(saved, cfg, ("out", *allowed))
        if changes:
            may = f" (only {', '.join(allowed)} may change)" if allowed else ""
            raise CheckpointError(f"--resume continues the run in {out} with the options it was started with, but "
                                  f"these differ: {'; '.join(changes)}. Resume without them{may}, or start a new run "
                                  "with another --out")
    write_config(out / CONFIG, cfg)


def write_model_spec(run_dir: Path, name: str, kwargs: dict[str, Any], splits: DataSplits,
                     data: str | None = None, data_root: str | None = None) -> Path:
    """How to rebuild the model of a run (so `load_run_model` needs only the folder), and what it was trained on."""
    info = splits.info
    return record_model_spec(run_dir, {
        "data": data, "data_root": data_root,
        "model": name, "kwargs": kwargs, "num_classes": info.num_classes, "in_chans": info.in_chans,
        "input_size": [info.in_chans, *info.image_size], "dataset": info.name,
        "mean": list(info.mean), "std": list(info.std), "norm": info.norm, "view": view_spec(info),
        "source_chans": info.source_chans,
    })


def record_model_spec(run_dir: Path, spec: dict[str, Any]) -> Path:
    """Write model.json; a model from the user's file (`net.py:build`) is recorded as a copy kept in the run folder
    (`model_src/net.py:build`, relative to it), so the run reloads after the user's file moved or changed."""
    recorded = copy_model_file(spec["model"], run_dir)
    extra = {"model_origin": str(spec.get("model_origin") or spec["model"])} if recorded != spec["model"] else {}
    return write_json(run_dir / MODEL_SPEC, {**spec, "model": recorded, **extra})


def read_model_spec(run_dir: str | Path) -> dict[str, Any]:
    p = Path(run_dir) / MODEL_SPEC
    if not p.is_file():
        raise CheckpointError(f"{str(run_dir)!r} is not a slimkit run folder ({MODEL_SPEC} missing): point to the "
                              "--out folder of `slimkit train`, `distill` or `compress`")
    try:
        spec = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p} is corrupt ({e}); rerun the job that wrote {run_dir}") from None
    if not isinstance(spec, dict) or not {"model", "num_classes", "in_chans", "input_size"} <= set(spec):
        raise CheckpointError(f"{p} is not a slimkit model spec (it needs model, num_classes, in_chans and "
                              f"input_size); rerun the job that wrote {run_dir}")
    spec.setdefault("kwargs", {})
    return spec


def load_run_model(run_dir: str | Path, weights: str = "model.safetensors") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained (or pruned) model from a run folder: (model with weights, its spec). The spec's model name
    is usable from anywhere (a model file's copy in the run folder is named by its path)."""
    spec = read_model_spec(run_dir)
    spec = {**spec, "model": resolve_model_name(spec["model"], run_dir)}
    path = Path(run_dir) / weights
    if not path.is_file():
        raise CheckpointError(f"{run_dir} holds no trained model ({weights} missing): the run did not finish; "
                              "continue it with --resume")
    if read_record(path) is not None:  # a pruned model (a compress run): rebuilt from its pruning record
        return load_pruned(path), spec
    model = create_model(spec["model"], num_classes=spec["num_classes"], in_chans=spec["in_chans"], **spec["kwargs"])
    load_weights(model, path, strict=True)
    return model, spec


def inspect_model(target: str, *, weights: str | None = None, num_classes: int | None = None,
                  input_size: tuple[int, ...] | None = None, kwargs: dict[str, Any] | None = None,
                  console: Console | None = None) -> tuple[nn.Module, tuple[int, ...]]:
    """The model `slimkit profile` / `export` work on, and its input size: a run folder (rebuilt with its weights
    and input size), or a model name with the user's weights (class count taken from the file unless given)."""
    if Path(target).is_dir():
        if weights:
            raise ConfigError(f"{target} is a run folder: it brings its own weights, drop --weights (or name a model "
                              "with --model)")
        model, spec = load_run_model(target)
        return model, tuple(input_size or spec["input_size"])
    registered = ":" not in target and not is_file_spec(target) and not target.endswith(".py")
    size = tuple(input_size or (model_info(target)["input_size"] if registered else (3, 224, 224)))
    if num_classes is None and not weights:
        num_classes = 1000 if size[1] >= 224 else 10
    model, _ = model_with_weights(target, weights, num_classes, size[0], dict(kwargs or {}), console)
    return model, size
