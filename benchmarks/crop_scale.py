"""Which random-resized-crop area range should `--input-size` train with on small datasets?

Trains the same model on the same class-balanced Fashion-MNIST subset, upsampled to `--size`, with
random-resized-crop scale ranges (0.08, 1) (the ImageNet recipe), (0.25, 1) and (0.5, 1), and, for reference, at
the native 28 px with the padded random crop; same seed, epochs and optimiser; test accuracy on the full test set
(evaluation: resize + centre crop, crop_pct 0.875).

    python benchmarks/crop_scale.py --model resnet20 --size 32 --limit 5000 --epochs 5

Writes benchmarks/results/crop_scale.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from rich.console import Console

from slimkit.data import create_dataset, make_loaders
from slimkit.models import create_model
from slimkit.report import rich_table
from slimkit.train import TrainConfig, Trainer, evaluate

RESULTS = Path(__file__).parent / "results"


def run_one(args: argparse.Namespace, scale: tuple[float, float] | None, seed: int) -> dict:
    size = None if scale is None else args.size
    splits = create_dataset(args.data, seed=seed, limit=args.limit, val_fraction=0.0, input_size=size,
                            scale=scale)
    loaders = make_loaders(splits, args.batch, seed=seed)
    torch.manual_seed(seed)
    model = create_model(args.model, num_classes=splits.info.num_classes, in_chans=splits.info.in_chans)
    t0 = time.perf_counter()
    Trainer(model, TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, seed=seed, progress=False),
            loaders.train).fit()
    acc = evaluate(model, loaders.test)["acc"]
    return {"scale": "native 28px, padded crop" if scale is None else f"({scale[0]:g}, {scale[1]:g})",
            "input": f"{splits.info.image_size[0]}px", "seed": seed, "test_acc": round(acc, 4),
            "train_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist")
    p.add_argument("--model", default="resnet20")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--limit", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--scales", default="0.08,0.25,0.5", help="lower ends of the scale ranges (upper end 1)")
    p.add_argument("--results", default="crop_scale")
    args = p.parse_args(argv)
    settings = [None] + [(float(s), 1.0) for s in args.scales.split(",")]
    rows = []
    for seed in range(args.seeds):
        for scale in settings:
            rows.append(run_one(args, scale, seed))
            print(rows[-1], flush=True)
    Console().print(rich_table(rows, title=f"{args.model} on {args.limit} {args.data} images, {args.epochs} epochs"))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.results}.json"
    out.write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
