"""`slimkit profile`: MACs, parameters, per-layer costs and (optionally) measured latency of a model."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from slimkit.cli._common import (
    CONFIG_OPTION,
    MODEL_ARG_OPTION,
    WEIGHTS_OPTION,
    console,
    parse_kv,
    parse_size,
    refuse_empty,
)
from slimkit.config import load_yaml
from slimkit.fileio import atomic_write
from slimkit.jobs._common import inspect_model
from slimkit.profile import measure_latency, profile
from slimkit.report import format_count, rich_table


def profile_cmd(
    model: str = typer.Argument(..., help="Model name (see `slimkit models`), timm:<name> / torchvision:<name>, your "
                                "own path/to/net.py:function, or a slimkit run folder."),
    weights: str = WEIGHTS_OPTION,
    input_size: str = typer.Option(None, "--input-size", help="C,H,W (default: the model's or run's own)."),
    num_classes: int = typer.Option(None, "--num-classes", help="Classifier outputs (default: the weights file's; "
                                    "without weights 10, or 1000 at 224)."),
    latency: bool = typer.Option(False, "--latency", help="Also measure latency (batch 1 and 32)."),
    backend: str = typer.Option("onnxruntime", "--backend", help="Latency backend: torch or onnxruntime."),
    threads: int = typer.Option(None, "--threads", help="CPU threads for latency (default: all)."),
    top: int = typer.Option(15, "--top", help="Rows of the per-layer table."),
    json_out: Path = typer.Option(None, "--json", help="Write the full report as JSON here."),
    model_arg: list[str] = MODEL_ARG_OPTION,
    config: Path = CONFIG_OPTION,
) -> None:
    """Count MACs and parameters (per layer and per op kind) and optionally measure latency."""
    refuse_empty(dict(model=model, weights=weights, input_size=input_size))
    opts = load_yaml(config) if config else {}
    net, size = inspect_model(model, weights=weights or opts.get("weights"),
                              num_classes=num_classes or opts.get("num_classes"),
                              input_size=parse_size(input_size or opts.get("input_size")),
                              kwargs={**opts.get("model_kwargs", {}), **parse_kv(model_arg)}, console=console)
    report = profile(net, size)
    console.print(report.table(top))
    data = report.to_dict()
    rows = [{"model": model, "input": "x".join(map(str, size)), "MACs": format_count(report.macs),
             "params": format_count(report.params), **{k: format_count(v) for k, v in report.by_kind.items()}}]
    if latency:
        for batch in (1, 32):
            with console.status(f"measuring {backend} latency at batch {batch}"):
                lat = measure_latency(net, size, backend=backend, threads=threads, batch=batch)
            rows[0][f"{backend} b{batch} ms"] = round(lat.median_ms, 3)
            data[f"latency_b{batch}"] = lat.to_dict()
    console.print(rich_table(rows, title="summary"))
    if json_out:
        atomic_write(json_out, json.dumps(data, indent=1))


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_cmd)
