"""TinyViT-5M trained the paper's way on Fashion-MNIST: fast distillation from stored teacher logits.

The teacher (default ResNet-20) is trained on the whole training set (it knows more than the student's subset, as
TinyViT's ImageNet-21k teacher does); `slimkit distill store-logits` runs it once over `--epochs` augmentation epochs
of the student's class-balanced subset and keeps its top-10 probabilities; TinyViT-5M (`small_input`) then trains
from the store (`slimkit distill --method stored`, TinyViT's loss: soft targets only, T=1, the stored augmentation
replayed) and, for comparison, from scratch on the labels. Same subset, recipe (AdamW 1e-3, weight decay 0.05,
cosine, one warm-up epoch, batch 64) and epochs; test accuracy on the full 10,000 test images. Runs are cached
under benchmarks/cache/tinyvit and resumed.

    python benchmarks/tinyvit.py --limit 2000 --epochs 15 --teacher-epochs 1 --seeds 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from slimkit.jobs import train as train_job
from slimkit.jobs.distill import DistillJobConfig, StoreLogitsConfig, store_logits
from slimkit.jobs.distill import run as distill
from slimkit.report import markdown_table
from slimkit.train import TrainConfig

HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="tinyvit_5m")
    p.add_argument("--teacher", default="resnet20")
    p.add_argument("--teacher-epochs", type=int, default=1, help="teacher epochs on the whole training set")
    p.add_argument("--limit", type=int, default=2000, help="the student's training images (class-balanced)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--results", default="tinyvit", help="name of the JSON written under benchmarks/results")
    args = p.parse_args()
    root = HERE / "cache" / "tinyvit"
    teacher = root / f"teacher_{args.teacher}_all_{args.teacher_epochs}ep"
    if not (teacher / "summary.json").is_file():
        train_job.run(train_job.TrainJobConfig(model=args.teacher, data="fashion-mnist", out=str(teacher),
                                               train=TrainConfig(epochs=args.teacher_epochs, progress=False)),
                      resume=True)
    teacher_acc = json.loads((teacher / "summary.json").read_text())["test_acc"]
    runs: dict[str, list[dict]] = {"none": [], "stored": []}
    for seed in range(args.seeds):
        store = root / f"store_{args.teacher}_{args.limit}_{args.epochs}ep_seed{seed}"
        if not (store / "summary.json").is_file():  # the student's seed fixes the augmentation the store replays
            store_logits(StoreLogitsConfig(teacher=args.teacher, teacher_ckpt=str(teacher), data="fashion-mnist",
                                           limit=args.limit, seed=seed, epochs=args.epochs, out=str(store)))
        train = TrainConfig(epochs=args.epochs, batch_size=64, optimizer="adamw", lr=1e-3, weight_decay=0.05,
                            warmup_epochs=1.0, seed=seed, progress=False)
        for method in runs:
            out = root / f"{args.student}_{args.limit}_{args.epochs}ep_{method}_seed{seed}"
            if (out / "summary.json").is_file():
                runs[method].append(json.loads((out / "summary.json").read_text()))
                continue
            opts = {"store": str(store)} if method == "stored" else {}
            runs[method].append(distill(DistillJobConfig(
                student=args.student, student_kwargs={"small_input": True}, teacher=None, method=method, options=opts,
                data="fashion-mnist", limit=args.limit, out=str(out), train=train), resume=True))
            print(json.dumps({"seed": seed, "method": method, "test_acc": runs[method][-1]["test_acc"]}), flush=True)
    rows = []
    for method, label in (("none", "from scratch (labels)"), ("stored", "stored top-10 logits (TinyViT)")):
        accs = [r["test_acc"] for r in runs[method]]
        r0 = runs[method][0]
        rows.append({"student": f"{args.student} {label}", "params_M": round(r0["student_params"] / 1e6, 2),
                     "macs_M": round(r0["student_macs"] / 1e6, 1), "test_acc": round(float(np.mean(accs)), 4),
                     "std": round(float(np.std(accs)), 4), "seeds": len(accs), "per_seed": accs,
                     "train_s": round(float(np.mean([r["train_time_s"] for r in runs[method]])))})
    out = {"args": vars(args), "teacher": {"model": args.teacher, "test_acc": teacher_acc,
                                           "trained_on": "all 54,000 training images"}, "rows": rows, "runs": runs}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{args.results}.json").write_text(json.dumps(out, indent=2, default=str))
    print(markdown_table([{k: v for k, v in r.items() if k != "per_seed"} for r in rows]))
    print(f"teacher {args.teacher}: test {teacher_acc:.4f}")


if __name__ == "__main__":
    main()
