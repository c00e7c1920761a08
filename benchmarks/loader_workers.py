"""How many DataLoader worker processes should training at 224 use? Images per second of slimkit's training loader
(random-resized-crop + flip at --input-size, normalise, collate) with 0, 1 and 2 workers, on:

- a folder of Fashion-MNIST PNGs at their native 28 px (what `make_image_folder.py` writes by default),
- the same images written as 256 px RGB PNGs (decoding costs what it costs for real photos of that size),
- Fashion-MNIST in memory, upsampled to 224 on the fly;

alone (the loader's own throughput) and feeding a training step of a small timm model at 224 (the loader and the
model share the machine's cores). Rounds are interleaved (0, 1, 2 workers, then again) so machine noise hits all
settings alike; the table shows the median of the rounds.

    python benchmarks/loader_workers.py --images 3000 --rounds 3

Writes benchmarks/results/loader_workers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).parent))
from make_image_folder import main as make_folder  # noqa: E402

from slimkit.data import create_dataset, make_loaders  # noqa: E402
from slimkit.data.datasets import available_cpus  # noqa: E402
from slimkit.models import create_model  # noqa: E402
from slimkit.report import rich_table  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def _loader_rate(splits, workers: int, batch: int, max_images: int, model=None, opt=None) -> float:
    """Images per second over one pass of (at most `max_images` of) the training loader, worker start-up included."""
    loader = make_loaders(splits, batch, num_workers=workers, seed=0).train
    splits.train.set_epoch(1)
    n, t0 = 0, time.perf_counter()
    for x, y in loader:
        if model is not None:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        n += len(y)
        if n >= max_images:
            break
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=3000, help="training images in each folder")
    p.add_argument("--size", type=int, default=224, help="--input-size of the loader")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--train-model", default="timm:mobilenetv3_small_050", help="model of the training-step rows")
    p.add_argument("--train-images", type=int, default=512, help="images per training-step measurement")
    p.add_argument("--workdir", default=None, help="where to write the PNG folders (default: a temporary folder)")
    p.add_argument("--results", default="loader_workers")
    args = p.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="slimkit-loader-"))
    folders = {"png 28px grey": tmp / "fm28", "png 256px rgb": tmp / "fm256"}
    for name, path in folders.items():
        if not (path / "train").is_dir():
            extra = ["--size", "256", "--rgb"] if "256" in name else []
            make_folder(["--out", str(path), "--limit", str(args.images), "--test-limit", "100", *extra])
    data = {name: create_dataset(str(path), input_size=(3, args.size, args.size), mean=(0.5,), std=(0.25,),
                                 val_fraction=0.0) for name, path in folders.items()}
    data["in-memory fashion-mnist"] = create_dataset("fashion-mnist", input_size=(3, args.size, args.size),
                                                     mean=(0.5,), std=(0.25,), limit=args.images, val_fraction=0.0)
    torch.manual_seed(0)
    model = create_model(args.train_model, num_classes=10, in_chans=3).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    rates: dict[tuple[str, str, int], list[float]] = {}
    for r in range(args.rounds):
        for name, splits in data.items():
            for mode in ("loader", "train step"):
                for w in workers:
                    m = (model, opt) if mode == "train step" else (None, None)
                    limit = args.train_images if mode == "train step" else args.images
                    rate = _loader_rate(splits, w, args.batch, limit, *m)
                    rates.setdefault((name, mode, w), []).append(rate)
                    print(f"round {r}: {name:24s} {mode:10s} workers={w}: {rate:7.1f} images/s", flush=True)
    rows = []
    for (name, mode, w), vals in rates.items():
        base = statistics.median(rates[(name, mode, workers[0])])
        med = statistics.median(vals)
        rows.append({"data": name, "measured": mode if mode == "loader" else f"{mode} ({args.train_model})",
                     "workers": w, "images_per_s": round(med, 1), f"vs {workers[0]} workers": round(med / base, 2),
                     "rounds": [round(v, 1) for v in vals]})
    Console().print(rich_table([{k: v for k, v in row.items() if k != "rounds"} for row in rows],
                     title=f"training loader at {args.size}px, {available_cpus()} CPUs"))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{args.results}.json"
    out.write_text(json.dumps({"cpus": available_cpus(), "torch_threads": torch.get_num_threads(),
                               "input_size": args.size, "batch": args.batch, "images": args.images,
                               "rounds": args.rounds, "load_average": os.getloadavg(), "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
