"""`slimkit models`: list the model zoo (or a pass-through library's models)."""

from __future__ import annotations

from pathlib import Path

import typer

from slimkit.cli._common import CONFIG_OPTION, console
from slimkit.config import load_yaml
from slimkit.models import create_model, list_models, model_info
from slimkit.models._external import list_external
from slimkit.profile import count_params
from slimkit.report import format_count, rich_table


def models(
    pattern: str = typer.Argument("*", help="Shell pattern, e.g. 'resnet*'."),
    external: str = typer.Option(None, "--external", help="List timm or torchvision models instead."),
    config: Path = CONFIG_OPTION,
) -> None:
    """List registered models with their default input size, parameters and family."""
    opts = load_yaml(config) if config else {}
    pattern = opts.get("pattern", pattern) if pattern == "*" else pattern
    external = external or opts.get("external")
    if external:
        names = list_external(external, pattern)
        console.print("\n".join(f"{external}:{n}" for n in names))
        console.print(f"[bold]{len(names)}[/] {external} models (use as --model {external}:<name>)")
        return
    rows = []
    for name in list_models(pattern):
        meta = model_info(name)
        params = count_params(create_model(name, num_classes=1000 if meta["input_size"][1] >= 224 else 10))
        rows.append({"model": name, "family": meta.get("family", ""), "input": "x".join(map(str, meta["input_size"])),
                     "params": format_count(params), "paper": meta.get("paper", "")})
    if not rows:
        console.print(f"0 models match {pattern!r}; see `slimkit models` for the full list")
        return
    console.print(rich_table(rows, title=f"{len(rows)} models"))


def register(app: typer.Typer) -> None:
    app.command("models")(models)
