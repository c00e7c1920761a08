"""Save and reload pruned models without pickle: weights in safetensors, the pruning record in JSON.

`<name>.safetensors` holds the pruned weights; `<name>.prune.json` the record: the original model (registry name
and arguments, when known) and, for each pruning step in order, the kept indices per (module, role). Loading
rebuilds the original model, replays the record with `apply_plan` (the same surgery that made it) and loads the
weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from slimkit.errors import CheckpointError
from slimkit.models import create_model
from slimkit.prune.surgery import apply_plan
from slimkit.train import load_weights, save_weights

__all__ = ["save", "load", "record_path", "replay"]


def record_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".prune.json")


def save(model: nn.Module, path: str | Path, *, model_name: str | None = None,
         model_kwargs: dict[str, Any] | None = None) -> Path:
    """Write weights and the pruning record (`model.slimkit_pruning`, set by `slimkit.prune.prune`)."""
    path = Path(path)
    record = dict(getattr(model, "slimkit_pruning", None) or {"version": 1, "steps": []})
    if model_name is not None:
        record["model"] = {"name": model_name, "kwargs": model_kwargs or {}}
    save_weights(model, path)
    record_path(path).write_text(json.dumps(record))
    return path


def replay(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Apply a pruning record to an unpruned model (in place): the same structure as when it was made."""
    if record.get("version") != 1:
        raise CheckpointError(f"unknown pruning record version {record.get('version')!r}; expected 1")
    for plan in record.get("steps", []):
        apply_plan(model, {(n, r): k for n, r, k in plan})
    model.slimkit_pruning = record
    return model


def load(path: str | Path, model_or_name: nn.Module | str | None = None, **model_kwargs: Any) -> nn.Module:
    """Rebuild a pruned model: from a fresh unpruned model, a registry name, or the name stored in the record."""
    path = Path(path)
    rp = record_path(path)
    if not rp.is_file():
        raise CheckpointError(f"pruning record {str(rp)!r} not found next to {path.name}: save with slimkit.prune.save")
    try:
        record = json.loads(rp.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{rp} is corrupt ({e})") from None
    if isinstance(model_or_name, nn.Module):
        model = model_or_name
    else:
        spec = record.get("model", {})
        name = model_or_name or spec.get("name")
        if not name:
            raise CheckpointError(f"{rp} does not name the original model: pass it, e.g. load(path, 'resnet20', ...)")
        model = create_model(name, **{**spec.get("kwargs", {}), **model_kwargs})
    try:
        replay(model, record)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"the record {rp.name} does not fit {type(model).__name__}: {e}. Build the same "
                              "original model (name, num_classes, in_chans) it was pruned from") from None
    return load_weights(model, path)
