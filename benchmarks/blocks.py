"""Compact blocks side by side on Fashion-MNIST (28x28 grey, `small_input=True`), equal epochs and recipe.

1. MicroNet vs MobileNetV2 at the same MACs: MobileNetV2's width multiplier is bisected until its MACs match the
   MicroNet variant's (MobileNetV2 cannot go below ~3.9M MACs at 28x28: its 1280-wide last layer stays fixed for
   widths < 1, so MicroNet-M1's 1.5M has no counterpart; M3 is matched instead and M1 is reported alone).
2. MobileNetV2-0.5 with ReLU6 vs DY-ReLU-B vs Coordinate Attention vs Dynamic Conv, plus MobileNeXt-0.5 and
   MobileNetV3-Small.

Accuracy after E epochs, MACs, params, onnxruntime latency at batch 1 and 32. Trained models are cached in
benchmarks/cache/blocks and reused; results go to benchmarks/results/blocks.json.

    python benchmarks/blocks.py --limit 10000 --epochs 8
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from slimkit.data import create_dataset, make_loaders
from slimkit.models import create_model, load_weights
from slimkit.profile import count_macs, count_params, measure_latency
from slimkit.report import markdown_table
from slimkit.train import TrainConfig, Trainer, evaluate, save_weights

HERE = Path(__file__).parent
SHAPE = (1, 28, 28)


def _build(name: str, kwargs: dict[str, Any]) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, num_classes=10, in_chans=1, small_input=True, **kwargs)


def match_width(target_macs: float, lo: float = 0.05, hi: float = 1.0) -> float:
    """MobileNetV2 width whose MACs at 28x28 are closest to `target_macs` (bisection; MACs grow with width)."""
    for _ in range(14):
        mid = (lo + hi) / 2
        if count_macs(_build("mobilenetv2_100", {"width": mid}), SHAPE) < target_macs:
            lo = mid
        else:
            hi = mid
    return round((lo + hi) / 2, 4)


def _train(label: str, name: str, kwargs: dict[str, Any], loaders: Any, args: argparse.Namespace) -> dict[str, Any]:
    model = _build(name, kwargs)
    cache = HERE / "cache" / "blocks" / f"{label}_{args.limit}_{args.epochs}ep.safetensors"
    t0 = time.perf_counter()
    if cache.is_file():
        load_weights(model, cache, strict=True)
        train_s = json.loads(cache.with_suffix(".json").read_text())["train_s"]
    else:
        cfg = TrainConfig(epochs=args.epochs, batch_size=128, lr=0.1, seed=0)
        Trainer(model, cfg, loaders.train, out_dir=HERE / "cache" / "blocks" / f"{label}_run").fit(resume=True)
        train_s = round(time.perf_counter() - t0, 1)
        save_weights(model, cache)
        cache.with_suffix(".json").write_text(json.dumps({"train_s": train_s}))
    lat = {f"ort_b{b}_ms": round(measure_latency(model, SHAPE, backend="onnxruntime", batch=b, repeats=30,
                                                 min_time_s=0.5).median_ms, 3) for b in (1, 32)}
    return {"model": label, "test_acc": round(evaluate(model, loaders.test)["acc"], 4),
            "macs_M": round(count_macs(model, SHAPE) / 1e6, 3), "params_M": round(count_params(model) / 1e6, 3),
            **lat, "train_s": train_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--only", nargs="*", default=None, help="run only these rows (labels, e.g. micronet_m3)")
    args = p.parse_args()
    splits = create_dataset("fashion-mnist", None, seed=0, val_fraction=0.0, limit=args.limit, augment=True)
    loaders = make_loaders(splits, 128, seed=0)
    m3_macs = count_macs(_build("micronet_m3", {}), SHAPE)
    width = match_width(m3_macs)
    runs: list[tuple[str, str, str, dict[str, Any]]] = [
        ("micronet_vs_mbv2", "micronet_m1", "micronet_m1", {}),
        ("micronet_vs_mbv2", "micronet_m3", "micronet_m3", {}),
        ("micronet_vs_mbv2", f"mobilenetv2_w{width}", "mobilenetv2_100", {"width": width}),
        ("mbv2_blocks", "mobilenetv2_050", "mobilenetv2_050", {}),
    ]
    for name in ("mobilenetv2_050_dyrelu", "mobilenetv2_050_ca", "mobilenetv2_050_dyconv", "mobilenext_050",
                 "mobilenetv3_small_100"):
        runs.append(("mbv2_blocks", name, name, {}))
    if args.only:
        runs = [r for r in runs if r[1] in args.only or r[1].startswith(tuple(args.only))]
    rows = []
    for study, label, name, kwargs in runs:
        row = {"study": study, **_train(label, name, kwargs, loaders, args)}
        rows.append(row)
        print(json.dumps(row), flush=True)
        out = {"args": vars(args), "micronet_m3_macs": m3_macs, "matched_mbv2_width": width, "rows": rows}
        (HERE / "results").mkdir(exist_ok=True)  # written after every row: an interrupted run keeps what it did
        (HERE / "results" / "blocks.json").write_text(json.dumps(out, indent=2))
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
