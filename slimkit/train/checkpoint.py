"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

A checkpoint directory holds the model's weights, the optimizer's per-parameter tensors (flattened to
`"<param index>.<key>"`), optionally the best weights so far, and `state.json` (epoch, step, RNG states, config,
callback states, the optimizer's param groups and scalar state). The files commit as one unit
(`slimkit.fileio.commit_files`): `state.json` is written last and names the files it belongs with, so a kill in the
middle of a write leaves the previous checkpoint whole.
"""

from __future__ import annotations

import base64
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from slimkit.errors import CheckpointError
from slimkit.fileio import atomic_write, commit_files, read_manifest
from slimkit.models import load_weights

__all__ = ["save_weights", "optimizer_to_flat", "optimizer_from_flat", "rng_state", "set_rng_state",
           "write_checkpoint", "read_checkpoint", "checkpoint_files", "tensor_to_json", "tensor_from_json"]


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage; clone tied tensors
    out, seen = {}, set()
    for k, v in sd.items():
        ptr = v.untyped_storage().data_ptr() if v.numel() else None
        out[k] = v.detach().clone().contiguous() if ptr in seen else v.detach().contiguous()
        if ptr is not None:
            seen.add(ptr)
    return out


def save_weights(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """The model's state dict as safetensors, written atomically (whole or not at all)."""
    sd = _contiguous(model.state_dict())
    return atomic_write(path, lambda tmp: save_file(sd, str(tmp), metadata=metadata))


def optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{idx}.{k}"] = v.detach().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_flat(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def tensor_to_json(t: torch.Tensor) -> dict[str, Any]:
    """A tensor as JSON (dtype, shape, base64 bytes), for callback states, which checkpoints keep in state.json."""
    t = t.detach().cpu().contiguous()
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
            "data": base64.b64encode(t.reshape(-1).view(torch.uint8).numpy().tobytes()).decode("ascii")}


def tensor_from_json(d: dict[str, Any]) -> torch.Tensor:
    """The tensor `tensor_to_json` wrote, bit for bit."""
    raw = bytearray(base64.b64decode(d["data"]))
    dtype = getattr(torch, d["dtype"])
    flat = torch.frombuffer(raw, dtype=torch.uint8).view(dtype) if raw else torch.empty(0, dtype=dtype)
    return flat.reshape(d["shape"]).clone()


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(s: dict[str, Any]) -> None:
    random.setstate((s["python"][0], tuple(s["python"][1]), s["python"][2]))
    np.random.set_state((s["numpy"][0], np.asarray(s["numpy"][1], dtype=np.uint32), *s["numpy"][2:]))
    torch.set_rng_state(torch.tensor(s["torch"], dtype=torch.uint8))


def write_checkpoint(directory: str | Path, model: nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any],
                     files: dict[str, Path] | None = None) -> Path:
    """Write a resumable checkpoint as one unit (weights, optimizer, state, and `files`: other files by logical
    name, e.g. the best weights, hard-linked in)."""
    sd = _contiguous(model.state_dict())
    tensors, meta = optimizer_to_flat(opt)
    writers: dict[str, Any] = {
        "model.safetensors": lambda tmp: save_file(sd, str(tmp)),
        "optimizer.safetensors": lambda tmp: save_file(tensors, str(tmp)),
        **(files or {}),
    }
    return commit_files(directory, writers, {**state, "optimizer": meta, "rng": rng_state()})


def checkpoint_files(directory: str | Path) -> tuple[dict[str, Any], dict[str, Path]]:
    """The JSON state of the checkpoint in `directory` and its files by logical name."""
    d = Path(directory)
    if not (d / "state.json").is_file():
        raise CheckpointError(f"no checkpoint in {str(d)!r} (state.json missing): nothing to resume; drop --resume")
    try:
        state, paths = read_manifest(d)
    except (ValueError, OSError) as e:
        raise CheckpointError(f"{d / 'state.json'} is corrupt ({e}); delete the checkpoint folder to restart") from None
    for name in ("model.safetensors", "optimizer.safetensors"):
        paths.setdefault(name, d / name)  # a checkpoint written before units named no files
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise CheckpointError(f"the checkpoint in {d} is incomplete ({', '.join(missing)} missing); delete the "
                              "checkpoint folder to restart")
    return state, paths


def read_checkpoint(directory: str | Path, model: nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and RNG state; return the JSON state."""
    state, paths = checkpoint_files(directory)
    load_weights(model, paths["model.safetensors"], strict=True)
    optimizer_from_flat(opt, load_file(str(paths["optimizer.safetensors"])), state["optimizer"])
    set_rng_state(state["rng"])
    return state
