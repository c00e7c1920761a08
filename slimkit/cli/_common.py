"""Option parsing shared by subcommands: YAML + CLI merging, key=value model arguments, sizes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.console import Console

from slimkit.config import from_dict, load_yaml, merge, upgrade
from slimkit.errors import ConfigError
from slimkit.jobs._common import read_run_config
from slimkit.train.distributed import is_main_process

try:  # typer >= 0.20 runs on its own copy of click: the current command lives there
    from typer._click.globals import get_current_context
except ImportError:  # pragma: no cover - older typer on the real click
    from click import get_current_context

console = Console(quiet=not is_main_process())  # under torchrun, rank 0 prints the summary

CONFIG_OPTION = typer.Option(None, "--config", "-c", help="YAML file of options (command-line options win).")
MODEL_ARG_OPTION = typer.Option(None, "--model-arg", help="Extra model argument KEY=VALUE (repeatable).")
WEIGHTS_OPTION = typer.Option(None, "--weights", "-w", help="Your trained weights for the model: .safetensors or a "
                              "PyTorch state dict (.pt/.pth/.bin/.ckpt, read with weights_only=True).")
INPUT_SIZE_OPTION = typer.Option(None, "--input-size", help="Bring images to this size: 224, H,W or C,H,W (C=3 "
                                 "repeats grey images to RGB). Training: random-resized-crop + flip; evaluation: "
                                 "resize + centre crop. Default: native size.")
NORM_OPTION = typer.Option(None, "--norm", help="auto (default): the model's own mean/std (timm pretrained config, "
                           "torchvision: ImageNet), else the dataset's; dataset: always the train-split statistics.")
WORKERS_OPTION = typer.Option(None, "--workers", help="DataLoader worker processes (default: 2 for decoded or "
                              "resized images, 0 for in-memory images at native size).")


def one_of(names: Iterable[str], default: str | None = None) -> str:
    """A registry's names for an option's help ("l1, l2, ... (default l1)"): what is registered is what is listed."""
    return ", ".join(names) + (f" (default {default})" if default is not None else "")


def parse_kv(items: list[str] | None) -> dict[str, Any]:
    """`["small_input=true", "width=0.5"]` -> {"small_input": True, "width": 0.5} (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got {item!r} (e.g. --model-arg small_input=true)")
        out[key.strip()] = yaml.safe_load(value)
    return out


def parse_names(text: str | None, flag: str) -> tuple[str, ...] | None:
    """'heads, neurons' -> ("heads", "neurons"); a flag given with no name at all is an error, not the flag left
    out (None only when it was not given)."""
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ConfigError(f"{flag} is empty: give comma-separated names (e.g. {flag} heads,neurons) or leave the "
                          "option out")
    return names


def parse_numbers(items: list[str] | None, flag: str) -> dict[str, float] | None:
    """`["heads=0.3"]` -> {"heads": 0.3}; a value that is not a number, or a name given twice, is an error naming
    the entry (ranges are the library's to check)."""
    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise ConfigError(f"{flag} takes NAME=NUMBER (e.g. {flag} heads=0.3), got {item!r}")
        if key in out:
            raise ConfigError(f"{flag} gives {key} twice ({out[key]:g} and {value}): give each name once")
        try:
            out[key] = float(value)
        except ValueError:
            raise ConfigError(f"{flag} {key}={value}: {value!r} is not a number (e.g. {flag} {key}=0.3)") from None
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


# config keys whose command-line option has another name
_OPTION_NAMES = {"model_kwargs": "model_arg", "ignored_layers": "ignore", "strategies": "strategy",
                 "constraints": "constraint", "features": "feature", "space_kwargs": "space_arg",
                 "student_kwargs": "student_arg", "teacher_kwargs": "teacher_arg", "strategy_options": "option",
                 "options": "option"}


def flag_name(option: str, flags: Mapping[str, str] = {}) -> str:  # noqa: B006 - read only
    """The command-line flag of config option `option` (a dotted path), e.g. `train.lr` -> `--lr` (nested options
    given flat) or, through the command's `flags` (flag name -> option path), `prune.macs_target` -> `--macs`; an
    option without a flag of its own is named as in a --config file."""
    by_path = {path: flag for flag, path in flags.items()}
    name = by_path.get(option.split("[")[0]) or option.rsplit(".", 1)[-1].split("[")[0]
    ctx = get_current_context(silent=True)
    wanted = _OPTION_NAMES.get(name, name)
    for param in ctx.command.params if ctx is not None else ():
        if param.name == wanted and param.opts:
            return next((o for o in param.opts if o.startswith("--")), max(param.opts, key=len))
    return f"option {name!r}"


def refuse_empty(values: Mapping[str, Any], flags: Mapping[str, str] = {}) -> None:  # noqa: B006 - read only
    """An option given as an empty string (`-w "$W"` with W unset) is an error, never taken as the option left out
    (which would, e.g., train from scratch instead of loading the user's weights)."""
    for key, value in values.items():
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{flag_name(flags.get(key, key), flags)} is empty: give a value or leave the option out "
                              "(an unset shell variable?)")


def _put(out: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        out = out.setdefault(part, {})
    out[last] = value


def job_config(cls: type, config: Path | None, cli: Mapping[str, Any],
               nested: Mapping[str, type | Iterable[str]] = (), resume: bool = False,
               flags: Mapping[str, str] = {}) -> Any:  # noqa: B006 - read only
    """Build a job config from YAML then CLI values. Keys of nested configs (e.g. TrainConfig's `epochs`; a section
    is given as its dataclass or as its option names) may be given flat; they are routed to their section; `flags`
    routes a command-line value to the option it sets (`{"macs": "prune.macs_target"}`). Options renamed since are
    read under their new names (`slimkit.config.upgrade`). With `resume`, the run folder's own config.yaml is the
    first layer: a resumed run keeps the options it was started with, and any option given must agree with them
    (the job checks). A bad value is reported with its flag (`--lr must be > 0`, `--macs must be ...`)."""
    routes = {name: section for section, sub in dict(nested).items()
              for name in ([f.name for f in fields(sub)] if is_dataclass(sub) else sub)}
    top = {f.name for f in fields(cls)}
    refuse_empty(cli, flags)

    def layout(values: Mapping[str, Any], paths: Mapping[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            _put(out, paths.get(name) or (f"{routes[name]}.{name}" if name not in top and name in routes else name),
                 value)
        return upgrade(cls, out)

    out = layout(load_yaml(config), {}) if config else {}
    out = merge(cls, out, layout({k: v for k, v in cli.items() if v is not None}, flags))
    if resume:
        default_out = next((f.default for f in fields(cls) if f.name == "out"), None)
        saved = read_run_config(out.get("out", default_out)) if out.get("out", default_out) else None
        out = merge(cls, upgrade(cls, saved), out) if saved else out
    try:
        return from_dict(cls, out)  # (not build_config: an explicit null, e.g. finetune: null, is kept)
    except ConfigError as e:
        if e.option and e.detail:
            raise ConfigError(f"{flag_name(e.option, flags)} {e.detail}", option=e.option, detail=e.detail) from None
        raise
