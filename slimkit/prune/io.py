"""Save and reload pruned models without pickle: weights in safetensors, the pruning record in JSON.

`<name>.safetensors` holds the pruned weights and, in its metadata, the record: the original model (registry
name and arguments, when known) and, for each pruning step in order, the kept indices per (module, role). The
record is also written beside it as `<name>.prune.json` (for people and older readers), before the weights: the
weights file is the commit, so a kill between the two never pairs weights with another record. Loading rebuilds the
original model, replays the record with `apply_plan` (the same surgery that made it; token steps insert the same
token reducers) and loads the weights.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors import safe_open
from torch import nn

from slimkit.errors import CheckpointError
from slimkit.fileio import atomic_write
from slimkit.models import create_model, load_weights
from slimkit.models._user import copy_model_file, resolve_model_name
from slimkit.prune.record import record_of, with_record
from slimkit.prune.rewrite import apply_rewrites
from slimkit.prune.surgery import apply_plan
from slimkit.prune.tokens import insert_token_reducers
from slimkit.train import save_weights

__all__ = ["save", "load", "record_path", "read_record", "replay"]

_META_KEY = "slimkit_pruning"


def record_path(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.name.removesuffix(".safetensors") + ".prune.json")


def save(model: nn.Module, path: str | Path, *, model_name: str | None = None,
         model_kwargs: dict[str, Any] | None = None, record: dict[str, Any] | None = None) -> Path:
    """Write weights and the pruning record (`record`, default the one the model carries: `record_of(model)`, set
    by every pruning method). A model from a user's file (`net.py:build`) gets a copy of that file beside the
    record, so it reloads wherever the file goes."""
    path = Path(path)
    record = dict(record or record_of(model) or {"version": 1, "steps": []})
    if model_name is not None:
        record["model"] = {"name": copy_model_file(model_name, path.parent), "kwargs": model_kwargs or {}}
    text = json.dumps(record)
    atomic_write(record_path(path), text)
    save_weights(model, path, metadata={_META_KEY: text})  # last: the weights carry their own record
    return path


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The pruning record of pruned weights `path` (from the file itself, else `<name>.prune.json`); None when
    `path` holds unpruned weights (no record anywhere)."""
    path = Path(path)
    rp = record_path(path)
    text = None
    if path.is_file():
        try:
            with safe_open(str(path), "pt") as f:
                text = (f.metadata() or {}).get(_META_KEY)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None
    where = path
    if text is None and rp.is_file():
        text, where = rp.read_text(), rp
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"the pruning record in {where} is corrupt ({e})") from None


def replay(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Apply a pruning record to an unpruned model (in place): the same structure as when it was made."""
    if record.get("version") != 1:
        raise CheckpointError(f"unknown pruning record version {record.get('version')!r}; expected 1")
    apply_rewrites(model, record.get("rewrites", []))
    for plan in record.get("steps", []):
        if isinstance(plan, dict) and plan.get("kind") == "tokens":
            insert_token_reducers(model, plan)
        else:
            apply_plan(model, {(n, r): k for n, r, k in plan})
    return with_record(model, record)


def load(path: str | Path, model_or_name: nn.Module | str | None = None, **model_kwargs: Any) -> nn.Module:
    """Rebuild a pruned model: from a fresh unpruned model, a registry name, or the name stored in the record."""
    path = Path(path)
    rp = record_path(path)
    if not path.is_file():
        raise CheckpointError(f"pruned weights {str(path)!r} not found")
    record = read_record(path)
    if record is None:
        raise CheckpointError(f"{path} holds no pruning record (and {rp.name} is missing): save pruned models with "
                              "slimkit.prune.save; unpruned weights load with slimkit.load_weights")
    if isinstance(model_or_name, nn.Module):
        model = model_or_name
    else:
        spec = record.get("model", {})
        name = model_or_name or spec.get("name")
        if not name:
            raise CheckpointError(f"{rp} does not name the original model: pass it, e.g. load(path, 'resnet20', ...)")
        model = create_model(resolve_model_name(name, path.parent), **{**spec.get("kwargs", {}), **model_kwargs})
    try:
        replay(model, record)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"the record {rp.name} does not fit {type(model).__name__}: {e}. Build the same "
                              "original model (name, num_classes, in_chans) it was pruned from") from None
    load_weights(model, path, strict=True)
    return model
