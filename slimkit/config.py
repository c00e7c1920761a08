"""Frozen dataclass configs, filled in from YAML files, dicts and CLI overrides.

Each subpackage owns its config classes (e.g. `slimkit.train.TrainConfig`); this module only knows how to build any
frozen dataclass from layered sources with clear errors for unknown keys and wrong types.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from slimkit.errors import ConfigError

__all__ = ["from_dict", "load_yaml", "build_config", "to_dict", "config_changes", "upgrade", "merge"]

C = TypeVar("C")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist: check the path passed to --config")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of option: value, got {type(data).__name__}")
    return data


def _bad(where: str, detail: str) -> ConfigError:
    """An invalid value of option `where` (a dotted option path such as `train.lr`)."""
    return ConfigError.for_option(where, detail)


def _describe(tp: Any) -> str:
    """What a value of type `tp` looks like, for error messages."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp) if a is not type(None))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return "a list"
    return {int: "a whole number", float: "a number", str: "text", bool: "true/false"}.get(tp, getattr(
        tp, "__name__", str(tp)))


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert YAML/CLI values to the annotated type where the conversion is unambiguous."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is None:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except ConfigError as e:
                if typing.get_origin(a) in (tuple, list) and isinstance(value, (list, tuple)) or \
                        dataclasses.is_dataclass(a) and isinstance(value, Mapping):
                    raise e from None  # a list of the wrong items, a section's bad option: say which
        raise _bad(where, f"expects {_describe(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise _bad(where, f"expects {_describe(tp)}, got {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise _bad(where, f"expects a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise _bad(where, f"expects {len(args)} values, got {len(value)} ({value!r})")
            return tuple(_coerce(v, a, where) for v, a in zip(value, args, strict=True))
        inner = args[0] if args else Any
        seq = [_coerce(v, inner, where) for v in value]
        return tuple(seq) if origin is tuple else seq
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return from_dict(tp, value, where=where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise _bad(where, f"expects true/false, got {value!r}")
    if tp in (int, float, str):
        if isinstance(value, bool) and tp is not str:
            raise _bad(where, f"expects {_describe(tp)}, got {value!r}")
        try:
            out = tp(value)
        except (TypeError, ValueError):
            raise _bad(where, f"expects {_describe(tp)}, got {value!r}") from None
        if tp is int and isinstance(value, float) and out != value:
            raise _bad(where, f"expects a whole number, got {value!r}")
        return out
    return value


def from_dict(cls: type[C], data: Mapping[str, Any], *, where: str = "", base: Any = None) -> C:
    """Build dataclass `cls` from a mapping; unknown keys and bad values raise `ConfigError`, whose `option` is the
    dotted path of the option (`train.lr`) so a front end can name it its own way (the CLI: `--lr`). Options
    renamed since are read under their new names (`upgrade`). A nested section given as a mapping changes only
    the options it names of the field's default (`base`): a job whose default fine-tuning recipe has lr 0.01 keeps
    it when a file gives `finetune: {epochs: 2}`."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    prefix = f"{where}." if where else ""
    data = upgrade(cls, data, where)
    if base is not None:
        data = merge(cls, {f: getattr(base, f) for f in fields}, data)
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown option {prefix}{key!r}{hint}. Valid: {', '.join(sorted(fields))}")
        default = _section_default(fields[name])
        if isinstance(value, Mapping) and default is not None:
            kwargs[name] = from_dict(type(default), value, where=f"{prefix}{name}", base=default)
        else:
            kwargs[name] = _coerce(value, hints.get(name, Any), f"{prefix}{name}")
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a check of the config itself: its option is relative to this section
        if e.option and where:
            e.option = f"{where}.{e.option}"
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def _section_default(f: dataclasses.Field) -> Any:
    """The default of a field that holds a nested config section (a dataclass instance), else None."""
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return default if dataclasses.is_dataclass(default) and not isinstance(default, type) else None


def _section_type(cls: type, name: str) -> type | None:
    """The dataclass a field of `cls` holds (also through `X | None`), else None."""
    tp = typing.get_type_hints(cls).get(name)
    for t in typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,):
        if dataclasses.is_dataclass(t):
            return t
    return None


def upgrade(cls: type, data: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """`data` (options of `cls`, e.g. an old config file or run folder) in today's layout: options renamed since
    (the class's `RENAMED_OPTIONS`, old name -> new name, which may be a dotted path into a section such as
    `prune.macs_target`) under their new names, each with a DeprecationWarning; the new name wins when both are
    given. Nested sections are upgraded by their own class; the class's `upgrade_options` (if any) is applied before
    and after the renames (it must be idempotent)."""
    prefix = f"{where}." if where else ""
    renamed: Mapping[str, str] = getattr(cls, "RENAMED_OPTIONS", {})
    hook = getattr(cls, "upgrade_options", None) or (lambda d: d)
    out = hook({str(k).replace("-", "_"): v for k, v in data.items()})  # (a value that became a section first)
    for old, new in renamed.items():
        if old not in out:
            continue
        value = out.pop(old)
        warnings.warn(f"option {prefix}{old} is now called {prefix}{new}", DeprecationWarning, stacklevel=3)
        *path, last = new.split(".")
        section = out
        for part in path:
            if part not in section:
                section[part] = {}
            if not isinstance(section[part], Mapping):
                break  # the section is given whole (or as null) in today's layout: it wins
            section[part] = section = dict(section[part])
        else:
            section.setdefault(last, value)
    for name, value in list(out.items()):
        sub = _section_type(cls, name) if isinstance(value, Mapping) else None
        if sub is not None:
            out[name] = upgrade(sub, value, f"{prefix}{name}")
    return hook(out)


def merge(cls: type, base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Options `over` layered on `base` (both in today's layout, see `upgrade`): `over` wins, sections merge option
    by option, and an option of one of the class's `ONE_OF` groups (e.g. PruneConfig's budgets) given in `over`
    replaces the group's other options from `base` (a budget on the command line replaces the config file's)."""
    out = dict(base)
    for group in getattr(cls, "ONE_OF", ()):
        if any(over.get(k) is not None for k in group):
            for k in group:
                out.pop(k, None)
    for k, v in over.items():
        sub, old = _section_type(cls, k), out.get(k)
        if sub is not None and isinstance(v, Mapping) and dataclasses.is_dataclass(old):
            old = {f.name: getattr(old, f.name) for f in dataclasses.fields(old) if f.init}
        out[k] = merge(sub, old, v) if sub is not None and isinstance(v, Mapping) and isinstance(old, Mapping) else v
    return out


def build_config(cls: type[C], *sources: Mapping[str, Any] | str | Path | None) -> C:
    """Layer sources left to right (later wins, see `merge`): YAML paths or mappings; `None` entries and `None`
    values skip."""
    merged: dict[str, Any] = {}
    for src in sources:
        if src is None:
            continue
        data = load_yaml(src) if isinstance(src, (str, Path)) else src
        merged = merge(cls, merged, upgrade(cls, {k: v for k, v in data.items() if v is not None}))
    return from_dict(cls, merged)


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON/YAML-friendly dict of a config (tuples become lists)."""
    def conv(v: Any) -> Any:
        if isinstance(v, (tuple, list)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return {k: conv(v) for k, v in dataclasses.asdict(cfg).items()}


def _fields(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """A config's options by dotted key; nested config sections are walked into, dict-valued options are not."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        if dataclasses.is_dataclass(v):
            out.update(_fields(v, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = v
    return out


_MISSING = object()


def _lookup(data: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(data, Mapping) or part not in data:
            return _MISSING
        data = data[part]
    return data


def config_changes(saved: Mapping[str, Any], now: Any, allowed: Sequence[str] = ()) -> list[str]:
    """What differs between a run's saved options (a mapping, e.g. its config.yaml) and config `now`, as
    `"key: old -> new"` lines, the saved options read in today's layout (`upgrade`). Nested sections compare key by
    key (`train.lr`); keys the saved options lack (options added to slimkit since) and keys in `allowed` (the dotted
    key, its last part, or a whole section such as `int8`) are not compared."""
    with warnings.catch_warnings():  # a run folder of an older layout: compared in today's (it warned on loading)
        warnings.simplefilter("ignore", DeprecationWarning)
        saved = upgrade(type(now), saved)
    out = []
    for key, value in _fields(now).items():
        old = _lookup(saved, key)
        if old is _MISSING and "." in key and _lookup(saved, key.rsplit(".", 1)[0]) is None:
            old = None  # the section was off (e.g. distill: null) and is on now
        if old is _MISSING or key in allowed or key.rsplit(".", 1)[-1] in allowed or key.split(".", 1)[0] in allowed:
            continue
        if _norm(old) != _norm(value):
            out.append(f"{key}: {old!r} -> {value!r}")
    return out


def _norm(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, Mapping):
        return {k: _norm(x) for k, x in v.items()}
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    return v
