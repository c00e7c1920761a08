"""`slimkit quantize`: INT8 post-training quantization of a run folder's model or an fp32 ONNX file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from slimkit.cli._common import CONFIG_OPTION, INPUT_SIZE_OPTION, console, job_config, one_of
from slimkit.jobs.quantize import QuantizeJobConfig, int8_note, int8_rows, run
from slimkit.quantize import Int8Config
from slimkit.quantize.ptq import CALIBRATION_METHODS
from slimkit.report import rich_table


def print_int8(s: dict[str, Any]) -> None:
    """fp32 vs INT8 side by side, the layers kept in float, and a one-line verdict."""
    for title, rows in int8_rows(s).items():
        console.print(rich_table(rows, title=title))
    console.print(int8_note(s), highlight=False)


def quantize_cmd(
    source: str = typer.Argument(..., help="Run folder of `slimkit train` / `distill` / `compress`, or an fp32 "
                                 ".onnx file (then give --data)."),
    data: str = typer.Option(None, "--data", "-d", help="Dataset, .npz or image folder (default: the run's own)."),
    data_root: str = typer.Option(None, "--data-root", help="Folder (or file) holding the dataset."),
    limit: int = typer.Option(None, "--limit", help="Class-balanced subset of N training images (default: the "
                              "run's own)."),
    calibration_method: str = typer.Option(None, "--calibration-method",
                                           help=one_of(CALIBRATION_METHODS, "minmax") + "."),
    calibration_images: int = typer.Option(None, "--calibration-images", help="Training images to calibrate on "
                                           "(default 512)."),
    tolerance: float = typer.Option(None, "--tolerance", help="Accuracy points INT8 may lose on held-out images "
                                    "before layers are kept in float (default 0.5)."),
    confidence: float = typer.Option(None, "--confidence", help="One-sided confidence that the INT8 loss is within "
                                     "the tolerance, given the held-out images' sampling error (default 0.8; 0.5: "
                                     "the measured loss alone)."),
    eval_images: int = typer.Option(None, "--eval-images", help="Held-out images for the tolerance check (default "
                                    "1000: the validation split, topped up with training images outside --limit)."),
    max_float_layers: int = typer.Option(None, "--max-float", help="At most this many layers kept in float "
                                         "(default 4; 0: all INT8)."),
    keep_float: list[str] = typer.Option(None, "--keep-float", help="Layer (module or ONNX node name) always kept "
                                         "in float (repeatable)."),
    per_channel: bool = typer.Option(None, "--per-channel/--per-tensor", help="Weight scales per output channel "
                                     "(default) or per tensor."),
    out: str = typer.Option(None, "--out", "-o", help="Output folder (default: the run folder; for an .onnx file "
                            "<name>-int8/ beside it)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (the run's split: keep the run's seed)."),
    input_size: str = INPUT_SIZE_OPTION,
    config: Path = CONFIG_OPTION,
) -> None:
    """Quantize to INT8 (onnxruntime QDQ, per-channel weights, calibrated on training images) and compare fp32 vs
    INT8 accuracy, latency and size; layers whose quantization costs accuracy stay in float."""
    int8 = dict(calibration_method=calibration_method, calibration_images=calibration_images, tolerance=tolerance,
                confidence=confidence, eval_images=eval_images, max_float_layers=max_float_layers,
                exclude=keep_float or None, per_channel=per_channel)
    cli = dict(source=source, data=data, data_root=data_root, limit=limit, out=out, seed=seed, input_size=input_size,
               **{k: v for k, v in int8.items() if v is not None})
    cfg = job_config(QuantizeJobConfig, config, cli, nested={"int8": Int8Config})
    s = run(cfg)
    print_int8(s)
    console.print(f"INT8 model: {s['int8_onnx']}; deploy {s['deploy']['onnx']} ({s['deploy']['precision']}, the "
                  f"faster measured). Report: {s['out']}/int8.html")


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_cmd)
