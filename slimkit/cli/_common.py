"""Option parsing shared by subcommands: YAML + CLI merging, key=value model arguments, sizes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console

from slimkit.config import build_config, load_yaml
from slimkit.errors import ConfigError

console = Console()

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML file of options (command-line options win).")
MODEL_ARG_OPTION = typer.Option(None, "--model-arg", help="Extra model argument KEY=VALUE (repeatable).")


def parse_kv(items: list[str] | None) -> dict[str, Any]:
    """`["small_input=true", "width=0.5"]` -> {"small_input": True, "width": 0.5} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r} (e.g. --model-arg small_input=true)")
        out[key.strip()] = yaml.safe_load(value)
    return out


def parse_size(text: str | None) -> tuple[int, ...] | None:
    """'1,28,28' or '1x28x28' -> (1, 28, 28)."""
    if text is None:
        return None
    try:
        size = tuple(int(v) for v in text.replace("x", ",").split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--input-size must be C,H,W (e.g. 3,32,32), got {text!r}") from None
    if len(size) != 3 or min(size) < 1:
        raise ConfigError(f"--input-size must be three positive numbers C,H,W, got {text!r}")
    return size


def job_config(cls: type, config: Path | None, cli: Mapping[str, Any], nested: Mapping[str, type] = ()) -> Any:
    """Build a job config from YAML then CLI values. Keys of nested configs (e.g. TrainConfig's `epochs`) may be
    given flat; they are routed to their section."""
    merged: dict[str, Any] = dict(load_yaml(config)) if config else {}
    merged.update({k: v for k, v in cli.items() if v is not None})
    routes = {f.name: section for section, sub in dict(nested).items() for f in fields(sub)}
    top = {f.name for f in fields(cls)}
    out: dict[str, Any] = {}
    for key, value in merged.items():
        name = key.replace("-", "_")
        if name not in top and name in routes:
            out.setdefault(routes[name], {})[name] = value
        else:
            out[name] = value
    return build_config(cls, out)
