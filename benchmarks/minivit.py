"""MiniViT weight multiplexing on Fashion-MNIST: the unshared ViT against its multiplexed versions.

A DeiT-tiny-style ViT (timm's deit_tiny: width 192, 12 blocks, 3 heads; here 28x28 grey images in 7x7 patches, so
16 patch tokens + the class token) is trained from scratch (`slimkit train`); then its MiniViT versions
(`multiplex=k`: every k consecutive blocks share one attention and one MLP, per-layer LayerNorms and head-mixing
transformations) are trained from scratch for the same epochs with distillation from it (`slimkit distill
--teacher <the unshared run>`), with the paper's prediction-logit KD (soft targets only, T=1) and, as `none`, without
a teacher. Same data, recipe (AdamW 1e-3, weight decay 0.05, cosine, one warm-up epoch) and epochs for every row;
test accuracy on the full 10,000 test images; every row over `--seeds` training seeds (the teacher of seed s is the
unshared model of seed s). Runs are cached under benchmarks/cache/minivit and resumed.

    python benchmarks/minivit.py --limit 2000 --epochs 20 --seeds 3 --shares 2,3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from slimkit.jobs import train as train_job
from slimkit.jobs.distill import DistillJobConfig
from slimkit.jobs.distill import run as distill
from slimkit.report import markdown_table
from slimkit.train import TrainConfig

HERE = Path(__file__).parent
MODEL = "timm:deit_tiny_patch16_224"


def _train_cfg(args: argparse.Namespace, seed: int) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="adamw", lr=args.lr, weight_decay=0.05,
                       warmup_epochs=1.0, seed=seed, progress=False)


def _base(args: argparse.Namespace, root: Path, seed: int) -> tuple[Path, dict]:
    out = root / f"unshared_seed{seed}"
    if not (out / "summary.json").is_file():
        job = train_job.TrainJobConfig(model=MODEL, model_kwargs=dict(args.model_kwargs), data="fashion-mnist",
                                       limit=args.limit, out=str(out), train=_train_cfg(args, seed))
        train_job.run(job, resume=True)
    return out, json.loads((out / "summary.json").read_text())


def _mini(args: argparse.Namespace, root: Path, seed: int, share: int, method: str, teacher: Path) -> dict:
    out = root / f"share{share}_{method}_seed{seed}"
    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    opts = {"temperature": 1.0, "alpha": 1.0} if method in ("kd", "minivit") else {}
    cfg = DistillJobConfig(student=MODEL, student_kwargs={**args.model_kwargs, "multiplex": share},
                           teacher=MODEL if method != "none" else None, teacher_kwargs=dict(args.model_kwargs),
                           teacher_ckpt=str(teacher) if method != "none" else None, method=method, options=opts,
                           data="fashion-mnist", limit=args.limit, out=str(out), train=_train_cfg(args, seed))
    return distill(cfg, resume=True)


def _row(name: str, params: int, macs: int, runs: list[dict]) -> dict:
    accs = [r["test_acc"] for r in runs]
    return {"model": name, "params_M": round(params / 1e6, 3), "macs_M": round(macs / 1e6, 1),
            "test_acc": round(float(np.mean(accs)), 4), "std": round(float(np.std(accs)), 4), "seeds": len(accs),
            "per_seed": [round(a, 4) for a in accs],
            "train_s": round(float(np.mean([r["train_time_s"] for r in runs])))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=2000, help="training images (class-balanced; 10%% held out)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--patch", type=int, default=7, help="patch size on the 28x28 images")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--shares", default="2,3", help="layers per shared block")
    p.add_argument("--methods", default="kd,none", help="how the multiplexed models train: kd (logits, from the "
                   "unshared), minivit (logits + last-layer relations), none (no teacher)")
    p.add_argument("--seeded", default="kd", help="methods run with every seed (the others: seed 0 only)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--results", default="minivit", help="name of the JSON written under benchmarks/results")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.model_kwargs = {"img_size": 28, "patch_size": args.patch}
    root = HERE / "cache" / "minivit" / (f"deit_tiny_p{args.patch}_{args.limit}_{args.epochs}ep_b{args.batch_size}"
                                         f"_lr{args.lr}")
    shares = [int(s) for s in args.shares.split(",")]
    methods = args.methods.split(",")
    seeded = set(args.seeded.split(","))
    base_runs: list[dict] = []
    teachers: list[tuple[Path, dict]] = []
    mini_runs: dict[tuple[int, str], list[dict]] = {(k, m): [] for k in shares for m in methods}
    # the goal's rows first (every seed), then the rows run with seed 0 only
    order = [(seed, k, m) for seed in range(args.seeds) for k in shares for m in methods if m in seeded]
    order += [(0, k, m) for k in shares for m in methods if m not in seeded]
    for seed, k, m in order:
        if len(base_runs) <= seed:
            t0 = time.perf_counter()
            teachers.append(_base(args, root, seed))
            base_runs.append(teachers[-1][1])
            print(json.dumps({"seed": seed, "unshared": base_runs[-1]["test_acc"],
                              "s": round(time.perf_counter() - t0)}), flush=True)
        t0 = time.perf_counter()
        mini_runs[(k, m)].append(_mini(args, root, seed, k, m, teachers[seed][0]))
        print(json.dumps({"seed": seed, "share": k, "method": m, "test_acc": mini_runs[(k, m)][-1]["test_acc"],
                          "s": round(time.perf_counter() - t0)}), flush=True)
    from slimkit.models import create_model
    from slimkit.profile import count_macs, count_params

    def cost(**kw: int) -> tuple[int, int]:
        m = create_model(MODEL, num_classes=10, in_chans=1, **args.model_kwargs, **kw)
        return count_params(m), count_macs(m, (1, 28, 28))

    params0, macs0 = cost()
    rows = [_row("unshared (DeiT-Ti style)", params0, macs0, base_runs)]
    for k in shares:
        pk, mk = cost(multiplex=k)
        for m in methods:
            how = {"kd": "logit KD", "minivit": "logit + relation KD", "none": "no teacher"}[m]
            label = f"MiniViT share {k}, {how}"
            rows.append({**_row(label, pk, mk, mini_runs[(k, m)]), "param_reduction": round(params0 / pk, 2),
                         "points_vs_unshared": round(100 * (np.mean([r["test_acc"] for r in mini_runs[(k, m)]])
                                                            - rows[0]["test_acc"]), 2)})
    out = {"args": {k: v for k, v in vars(args).items()}, "model": MODEL, "rows": rows,
           "runs": {"unshared": base_runs, **{f"share{k}_{m}": r for (k, m), r in mini_runs.items()}}}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{args.results}.json").write_text(json.dumps(out, indent=2, default=str))
    print(markdown_table([{k: v for k, v in r.items() if k != "per_seed"} for r in rows]))


if __name__ == "__main__":
    main()
