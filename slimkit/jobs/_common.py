"""Helpers shared by jobs: building data and models from names, run directories, reloading trained models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from slimkit.config import to_dict
from slimkit.data import DataSplits, create_dataset
from slimkit.errors import CheckpointError
from slimkit.models import create_model
from slimkit.train import load_weights

__all__ = ["build_data", "build_model", "write_model_spec", "load_run_model", "write_json", "write_config"]

MODEL_SPEC = "model.json"


def build_data(name: str, root: str | None, *, seed: int, val_fraction: float, limit: int | None,
               augment: bool) -> DataSplits:
    return create_dataset(name, root, seed=seed, val_fraction=val_fraction, limit=limit, augment=augment)


def build_model(name: str, splits: DataSplits, kwargs: dict[str, Any]) -> nn.Module:
    """A registered (or timm:/torchvision:) model sized for the dataset's classes and channels."""
    return create_model(name, num_classes=splits.info.num_classes, in_chans=splits.info.in_chans, **kwargs)


def write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
    return path


def write_config(path: Path, cfg: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


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
                              "--out folder of `slimkit train`")
    return json.loads(p.read_text())


def load_run_model(run_dir: str | Path, weights: str = "model.safetensors") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a trained model from a run folder: (model with weights, its spec)."""
    spec = read_model_spec(run_dir)
    model = create_model(spec["model"], num_classes=spec["num_classes"], in_chans=spec["in_chans"], **spec["kwargs"])
    load_weights(model, Path(run_dir) / weights)
    return model, spec
