"""A user's own architecture from a Python file: `create_model("path/to/net.py:build", num_classes=10)`.

`build` is a function or class in that file returning an `nn.Module`; it gets `num_classes` and `in_chans` when its
signature takes them (or `**kwargs`), plus any extra model arguments. The file is imported under a private module
name keyed by its content, so the same file is imported once and an edited file is imported afresh.

Run folders keep a copy of the file (`copy_model_file`) and name the copy relative to the folder, so a run reloads
after the user's file moved or changed (`resolve_model_name`). Loading a model from a file runs that file's code:
load run folders you trust, as you would import their code.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import re
import shutil
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

from slimkit.errors import ModelError

__all__ = ["is_file_spec", "create_from_file", "copy_model_file", "resolve_model_name", "SOURCE_DIR"]

SOURCE_DIR = "model_src"  # where run folders keep the copy of a user's model file
_MODULES: dict[tuple[str, str], ModuleType] = {}


def _split(name: str) -> tuple[Path, str] | None:
    path, sep, attr = name.rpartition(":")
    return (Path(path), attr) if sep and path.endswith(".py") else None


def is_file_spec(name: str) -> bool:
    """Whether `name` points at a Python file: `path/to/net.py:build`."""
    return _split(name) is not None


def _import(path: Path, spec: str) -> ModuleType:
    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} not found (from {spec!r}): check the path; a model from a file is "
                         "named path/to/net.py:function")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    key = (str(path.resolve()), digest)
    if key in _MODULES:
        return _MODULES[key]
    name = f"slimkit_user_model_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_{digest}"
    loader_spec = importlib.util.spec_from_file_location(name, path)
    assert loader_spec is not None and loader_spec.loader is not None
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # dataclasses and pickling look classes up here
    sys.path.insert(0, str(path.parent.resolve()))  # the file may import its sibling modules
    try:
        loader_spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any failure of the user's code (sys.exit at import too)
        sys.modules.pop(name, None)
        raise ModelError(f"importing {path} failed: {type(e).__name__}: {e}. Fix the file (run "
                         f"`python {path}` to see the traceback)") from e
    finally:
        sys.path.remove(str(path.parent.resolve()))
    _MODULES[key] = module
    return module


def _accepted(fn: Any) -> tuple[set[str], bool]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return set(), False
    return {p.name for p in params}, any(p.kind is p.VAR_KEYWORD for p in params)


def create_from_file(spec: str, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> nn.Module:
    """Build the model `path/to/net.py:build` names; `num_classes` / `in_chans` are passed when accepted."""
    split = _split(spec)
    if split is None:
        raise ModelError(f"{spec!r} is not a model file: name it path/to/net.py:function")
    path, attr = split
    module = _import(path, spec)
    if not attr or not hasattr(module, attr):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_")
                       and getattr(v, "__module__", None) == module.__name__)
        example = f"{path}:{found[0] if found else 'build'}"
        raise ModelError(f"{path} has no {attr!r}" + (f"; it defines {', '.join(found)}" if found else "")
                         + f": name the function or class that builds the model, e.g. {example}")
    fn = getattr(module, attr)
    if not callable(fn):
        raise ModelError(f"{spec}: {attr} is a {type(fn).__name__}, not a function or class that builds a model")
    names, var_kw = _accepted(fn)
    call = dict(kwargs)
    if "num_classes" in names or var_kw:
        call.setdefault("num_classes", num_classes)
    if "in_chans" in names or var_kw:
        call.setdefault("in_chans", in_chans)
    elif "in_channels" in names:
        call.setdefault("in_channels", in_chans)
    try:
        model = fn(**call)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - any failure of the user's code
        args = ", ".join(f"{k}={v!r}" for k, v in call.items())
        raise ModelError(f"{spec}: calling {attr}({args}) failed: {type(e).__name__}: {e}") from e
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec}: {attr}(...) returned a {type(model).__name__}, not a torch.nn.Module: return the "
                         "model")
    return model


def copy_model_file(name: str, folder: str | Path) -> str:
    """Copy the file a `net.py:build` name points at into `folder/model_src/` and return the name of the copy,
    relative to `folder`; any other name is returned as it is."""
    split = _split(name)
    if split is None:
        return name
    path, attr = split
    if not path.is_file():
        raise ModelError(f"model file {str(path)!r} not found (from {name!r}): check the path")
    dest = Path(folder) / SOURCE_DIR / path.name
    if not (dest.is_file() and dest.resolve() == path.resolve()):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(".py.tmp")
        shutil.copyfile(path, tmp)
        tmp.replace(dest)
    return f"{SOURCE_DIR}/{path.name}:{attr}"


def resolve_model_name(name: str, folder: str | Path) -> str:
    """A model name recorded in a run folder (or beside a weights file), usable from anywhere: a relative
    `net.py:build` is taken relative to `folder` when the file is there."""
    split = _split(name)
    if split is None or split[0].is_absolute():
        return name
    local = Path(folder) / split[0]
    return f"{local}:{split[1]}" if local.is_file() else name
