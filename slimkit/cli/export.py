"""`slimkit export`: a run folder, or a model with your weights, to ONNX, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from slimkit.cli._common import CONFIG_OPTION, MODEL_ARG_OPTION, console, parse_kv, parse_size, refuse_empty
from slimkit.config import load_yaml
from slimkit.errors import ConfigError
from slimkit.export import export_onnx
from slimkit.jobs._common import inspect_model
from slimkit.report import rich_table


def export_cmd(
    target: str = typer.Argument(None, help="A run folder written by `slimkit train` / `compress` / `distill`, or a "
                                 "model name (same as --model)."),
    model: str = typer.Option(None, "--model", "-m", help="Model name, timm:<name>, torchvision:<name>, or your own "
                              "path/to/net.py:function."),
    weights: str = typer.Option(None, "--weights", "-w", "--checkpoint", help="Your trained weights for the model: "
                                ".safetensors or a PyTorch state dict (read with weights_only=True)."),
    out: Path = typer.Option(Path("model.onnx"), "--out", "-o", help="ONNX file to write."),
    input_size: str = typer.Option(None, "--input-size", help="C,H,W (default: the model's or run's own)."),
    num_classes: int = typer.Option(None, "--num-classes", help="Classifier outputs for a model name (default: the "
                                    "weights file's; without weights 10, or 1000 at 224)."),
    atol: float = typer.Option(1e-4, "--atol", help="Largest allowed |onnxruntime - torch| difference."),
    model_arg: list[str] = MODEL_ARG_OPTION,
    config: Path = CONFIG_OPTION,
) -> None:
    """Export to ONNX and report the onnxruntime-vs-PyTorch difference."""
    refuse_empty(dict(target=target, model=model, weights=weights, input_size=input_size))
    opts = load_yaml(config) if config else {}
    if target and model:
        raise ConfigError(f"give the model once: a run folder / model name ({target!r}) or --model ({model!r})")
    name = target or model or opts.get("model")
    if not name:
        raise ConfigError("name what to export: a run folder (slimkit export runs/x) or a model with its weights "
                          "(slimkit export --model timm:resnet18 --weights w.safetensors)")
    kwargs = {**opts.get("model_kwargs", {}), **parse_kv(model_arg)}
    net, size = inspect_model(name, weights=weights or opts.get("weights") or opts.get("checkpoint"),
                              num_classes=num_classes or opts.get("num_classes"),
                              input_size=parse_size(input_size or opts.get("input_size")), kwargs=kwargs,
                              console=console)
    res = export_onnx(net, out, torch.randn(1, *size), atol=atol)
    console.print(rich_table([{"onnx": str(res.path), "opset": res.opset, "exporter": res.exporter,
                               "max |diff|": f"{res.max_abs_diff:.2e}"}], title="export"))


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
