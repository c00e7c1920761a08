"""`slimkit export`: a model (optionally with trained weights) to ONNX, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from slimkit.cli._common import CONFIG_OPTION, MODEL_ARG_OPTION, console, parse_kv, parse_size
from slimkit.config import load_yaml
from slimkit.export import export_onnx
from slimkit.jobs._common import load_run_model
from slimkit.models import create_model, model_info
from slimkit.report import rich_table
from slimkit.train import load_weights


def export_cmd(
    model: str = typer.Argument(..., help="Model name, or a run folder written by `slimkit train`/`compress`."),
    out: Path = typer.Option(Path("model.onnx"), "--out", "-o", help="ONNX file to write."),
    checkpoint: Path = typer.Option(None, "--checkpoint", help="Weights (.safetensors) for a model name."),
    input_size: str = typer.Option(None, "--input-size", help="C,H,W (default: the model's or run's own)."),
    num_classes: int = typer.Option(10, "--num-classes", help="Classifier outputs for a model name."),
    atol: float = typer.Option(1e-4, "--atol", help="Largest allowed |onnxruntime - torch| difference."),
    model_arg: list[str] = MODEL_ARG_OPTION,
    config: Path = CONFIG_OPTION,
) -> None:
    """Export to ONNX and report the onnxruntime-vs-PyTorch difference."""
    opts = load_yaml(config) if config else {}
    input_size = input_size or opts.get("input_size")
    checkpoint = checkpoint or opts.get("checkpoint")
    model_arg = list(model_arg or []) + [f"{k}={v}" for k, v in opts.get("model_kwargs", {}).items()]
    if Path(model).is_dir():
        net, spec = load_run_model(model)
        size = parse_size(input_size) or tuple(spec["input_size"])
    else:
        size = parse_size(input_size) or tuple(model_info(model)["input_size"])
        net = create_model(model, num_classes=num_classes, in_chans=size[0], **parse_kv(model_arg))
        if checkpoint:
            load_weights(net, checkpoint)
    res = export_onnx(net, out, torch.randn(1, *size), atol=atol)
    console.print(rich_table([{"onnx": str(res.path), "opset": res.opset, "exporter": res.exporter,
                               "max |diff|": f"{res.max_abs_diff:.2e}"}], title="export"))


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
