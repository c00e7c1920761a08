"""Helpers shared by jobs: building data and models from names, run folders, reloading trained models.

A run folder belongs to one run: `prepare_run` is called by every job once its inputs are validated and before it
writes anything. It refuses a new run in a folder that holds one, and a resumed run whose options differ from the
folder's `config.yaml` (except options that are safe to change); then it writes `config.yaml`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from slimkit.config import config_changes, to_dict
from slimkit.data import DataSplits, create_dataset
from slimkit.errors import CheckpointError
from slimkit.fileio import atomic_write
from slimkit.models import create_model
from slimkit.prune.io import load as load_pruned
from slimkit.prune.io import read_record
from slimkit.train import load_weights, seeded
from slimkit.train.distributed import is_main_process

__all__ = ["build_data", "build_model", "write_model_spec", "load_run_model", "write_json", "write_config",
           "prepare_run", "read_run_config"]

MODEL_SPEC = "model.json"
CONFIG = "config.yaml"


def build_data(name: str, root: str | None, *, seed: int, val_fraction: float, limit: int | None,
               augment: bool) -> DataSplits:
    return create_dataset(name, root, seed=seed, val_fraction=val_fraction, limit=limit, augment=augment)


def build_model(name: str, splits: DataSplits, kwargs: dict[str, Any], seed: int) -> nn.Module:
    """A registered (or timm:/torchvision:) model sized for the dataset's classes and channels, its weights
    initialised from `seed` (so one seed gives one model, whatever ran before)."""
    with seeded(seed):
        return create_model(name, num_classes=splits.info.num_classes, in_chans=splits.info.in_chans, **kwargs)


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
    return write_json(run_dir / MODEL_SPEC, {
        "data": data, "data_root": data_root,
        "model": name, "kwargs": kwargs, "num_classes": info.num_classes, "in_chans": info.in_chans,
        "input_size": [info.in_chans, *info.image_size], "dataset": info.name,
        "mean": list(info.mean), "std": list(info.std),
    })


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
    """Rebuild a trained (or pruned) model from a run folder: (model with weights, its spec)."""
    spec = read_model_spec(run_dir)
    path = Path(run_dir) / weights
    if not path.is_file():
        raise CheckpointError(f"{run_dir} holds no trained model ({weights} missing): the run did not finish; "
                              "continue it with --resume")
    if read_record(path) is not None:  # a pruned model (a compress run): rebuilt from its pruning record
        return load_pruned(path), spec
    model = create_model(spec["model"], num_classes=spec["num_classes"], in_chans=spec["in_chans"], **spec["kwargs"])
    load_weights(model, path)
    return model, spec
