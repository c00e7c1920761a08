"""Distillation methods side by side on Fashion-MNIST: same student, same data, same epochs, one teacher.

Supervised: scratch vs KD vs Tf-KD vs feature KD vs ProxylessKD vs stored-logit KD (a store of E augmentation epochs
replayed in turn, so the teacher runs E/epochs as often as live KD; trained with live KD's temperature and alpha so
that only the source of the teacher's logits differs, `--tinyvit-loss` for TinyViT's T=1, alpha=1).
Self-supervised: SEED vs a SimCLR student without a teacher, compared by linear-probe accuracy (plus the untrained
student's and the teacher's probe).
Every run goes through `slimkit.jobs.distill.run` (what `slimkit distill` calls); runs are cached in
benchmarks/cache/distill and resumed, so an interrupted benchmark continues.

    python benchmarks/distill.py --limit 10000 --epochs 8 --teacher-epochs 30 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from slimkit.cli._common import parse_kv
from slimkit.data import create_dataset
from slimkit.distill import linear_probe
from slimkit.jobs import train as train_job
from slimkit.jobs._common import load_run_model
from slimkit.jobs.distill import DistillJobConfig, run
from slimkit.models import create_model
from slimkit.report import markdown_table
from slimkit.train import TrainConfig

HERE = Path(__file__).parent


def _teacher(args: argparse.Namespace, root: Path) -> Path:
    limit = args.limit if args.teacher_limit is None else (args.teacher_limit or None)
    out = root / f"teacher_{args.teacher}_{limit or 'all'}_{args.teacher_epochs}ep"
    if not (out / "summary.json").is_file():
        job = train_job.TrainJobConfig(model=args.teacher, data="fashion-mnist", limit=limit, out=str(out),
                                       train=TrainConfig(epochs=args.teacher_epochs, batch_size=128, seed=0))
        train_job.run(job, resume=True)
    return out


def _probe_untrained(args: argparse.Namespace) -> float:
    splits = create_dataset("fashion-mnist", None, seed=0, val_fraction=0.1, limit=args.limit, augment=False)
    torch.manual_seed(0)
    model = create_model(args.student, num_classes=10, in_chans=1, **parse_kv(args.student_arg))
    sub = torch.utils.data.Subset(splits.train, list(range(min(5000, len(splits.train)))))
    dl = torch.utils.data.DataLoader
    return linear_probe(model, dl(sub, batch_size=256), dl(splits.test, batch_size=256))


def plot(out: dict, name: str = "distill") -> Path:
    """Accuracy per method (test accuracy; linear-probe accuracy for the self-supervised ones), zoomed in."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = out["rows"]
    acc = [r["test_acc"] if r["test_acc"] is not None else r["probe_acc"] for r in rows]
    labels = [r["method"] + (" (probe)" if r["test_acc"] is None else "") for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 0.4 * len(rows) + 1.2))
    err = [r.get("test_acc_std") or 0.0 for r in rows]  # spread over seeds where several were run
    ax.barh(labels[::-1], acc[::-1], xerr=err[::-1], capsize=3,
            color=["tab:orange" if "probe" in lb else "tab:blue" for lb in labels[::-1]])
    for y, (a, e) in enumerate(zip(acc[::-1], err[::-1], strict=True)):
        ax.text(a + e, y, f"  {a:.4f}", va="center", fontsize=8)  # right of the error bar
    ax.set_xlim(min(acc) - 0.02, max(*acc, out["teacher"]["test_acc"]) + 0.015)
    ax.axvline(out["teacher"]["test_acc"], color="grey", ls="--", lw=1, label="teacher test acc")
    ax.set_xlabel("accuracy")
    ax.set_title(f"{out['args']['student']} on Fashion-MNIST ({out['args']['limit']} images, "
                 f"{out['args']['epochs']} epochs)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = HERE / "results" / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--student", default="resnet20")
    p.add_argument("--teacher", default="resnet56")
    p.add_argument("--limit", type=int, default=10000, help="training images (class-balanced)")
    p.add_argument("--teacher-limit", type=int, default=None,
                   help="training images of the teacher (default: --limit; 0: the whole training set, as a teacher "
                   "pretrained on more data than the student's transfer set)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--teacher-epochs", type=int, default=10)
    p.add_argument("--store-epochs", type=int, default=1, help="augmentation epochs in the logit store")
    p.add_argument("--methods", default="none,kd,tfkd,feature,proxyless,stored,seed,simclr")
    p.add_argument("--seeds", type=int, default=1, help="training seeds for the methods in --seeded (mean reported)")
    p.add_argument("--seeded", default="none,kd,stored", help="methods run with every seed (the goals' methods)")
    p.add_argument("--tinyvit-loss", action="store_true", help="stored KD with TinyViT's T=1, alpha=1 instead of "
                   "live KD's T=4, alpha=0.9")
    p.add_argument("--stored-views", choices=("replay", "fresh", "clean"), default="replay",
                   help="stored KD with fewer stored epochs than training: replay the stored augmentation (TinyViT) "
                   "or train on fresh augmentations against the stored targets (of earlier random views, or, with "
                   "'clean', of the un-augmented images: a one-pass store)")
    p.add_argument("--student-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="extra student argument, e.g. small_input=true (repeatable)")
    p.add_argument("--results", default="distill", help="name of the JSON / PNG written under benchmarks/results")
    args = p.parse_args()
    student_kwargs = parse_kv(args.student_arg)
    tag = "".join(f"_{k}={v}" for k, v in sorted(student_kwargs.items()))
    teacher_tag = "" if args.teacher_limit is None else f"_on{args.teacher_limit or 'all'}"
    run_name = f"{args.student}{tag}_{args.limit}_{args.epochs}ep_{args.teacher}_{args.teacher_epochs}ep{teacher_tag}"
    root = HERE / "cache" / "distill" / run_name
    teacher_dir = _teacher(args, root.parent)
    teacher_summary = json.loads((teacher_dir / "summary.json").read_text())
    base = DistillJobConfig(student=args.student, student_kwargs=student_kwargs, teacher=args.teacher,
                            teacher_ckpt=str(teacher_dir), data="fashion-mnist", limit=args.limit,
                            store_epochs=args.store_epochs,
                            train=TrainConfig(epochs=args.epochs, batch_size=128, seed=0))
    rows, results = [], {}
    seeded = set(args.seeded.split(","))
    for method in args.methods.split(","):
        opts = {"queue_size": 4096} if method == "seed" else {}
        name = method
        if method == "stored" and not args.tinyvit_loss:  # live KD's loss, so only the logits' source differs
            opts, name = {"temperature": 4.0, "alpha": 0.9}, "stored_t4_a0.9"
        if method == "stored" and args.stored_views != "replay":
            opts = {**opts, "store_views": args.stored_views}
            name = name.replace("stored", f"stored_{args.stored_views}")
        per_seed = []
        for seed in range(args.seeds if method in seeded else 1):  # seed 0 keeps the single-seed run's folder
            t0 = time.perf_counter()
            out = root / (name if seed == 0 else f"{name}_seed{seed}")
            s = run(replace(base, method=method, options=opts, out=str(out), train=replace(base.train, seed=seed)),
                    resume=True)
            s["bench_seconds"] = round(time.perf_counter() - t0, 1)
            per_seed.append(s)
        s = {**per_seed[0], "seed_runs": per_seed[1:]}
        accs = [r.get("test_acc") for r in per_seed]
        if len(per_seed) > 1 and None not in accs:
            s["test_acc"], s["test_acc_seeds"] = float(np.mean(accs)), accs
        results[method] = s
        rows.append({"method": method, "test_acc": s.get("test_acc"),
                     "test_acc_std": round(float(np.std(accs)), 4) if len(accs) > 1 and None not in accs else None,
                     "seeds": len(per_seed), "probe_acc": s.get("probe_acc"),
                     "train_s": per_seed[0]["train_time_s"], "teacher_forwards": per_seed[0]["teacher_forward_passes"]})
        print(json.dumps(rows[-1]), flush=True)
    untrained = _probe_untrained(args)
    teacher, _ = load_run_model(teacher_dir)
    splits = create_dataset("fashion-mnist", None, seed=0, val_fraction=0.1, limit=args.limit, augment=False)
    dl = torch.utils.data.DataLoader
    sub = torch.utils.data.Subset(splits.train, list(range(min(5000, len(splits.train)))))
    teacher_probe = linear_probe(teacher, dl(sub, batch_size=256), dl(splits.test, batch_size=256))
    acc = {m: r.get("test_acc") for m, r in results.items()}
    goals = {}
    if acc.get("kd") is not None and acc.get("none") is not None:
        goals["kd_minus_scratch_points"] = round(100 * (acc["kd"] - acc["none"]), 2)
    if acc.get("stored") is not None and acc.get("kd") is not None:
        goals["stored_minus_kd_points"] = round(100 * (acc["stored"] - acc["kd"]), 2)
        goals["stored_teacher_compute_vs_kd"] = results["stored"]["teacher_forward_passes"] / max(
            results["kd"]["teacher_forward_passes"], 1)
    if "seed" in results and "simclr" in results:
        goals["seed_minus_simclr_probe_points"] = round(100 * (results["seed"]["probe_acc"]
                                                               - results["simclr"]["probe_acc"]), 2)
    out = {"args": vars(args), "teacher": {"model": args.teacher, "test_acc": teacher_summary["test_acc"],
                                           "probe_acc": teacher_probe, "epochs": args.teacher_epochs},
           "untrained_student_probe_acc": untrained, "rows": rows, "goals": goals, "runs": results}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"{args.results}.json").write_text(json.dumps(out, indent=2, default=str))
    plot(out, args.results)
    print(markdown_table(rows))
    print(f"teacher {args.teacher}: test {teacher_summary['test_acc']:.4f}, probe {teacher_probe:.4f}; "
          f"untrained {args.student} probe {untrained:.4f}")
    print(json.dumps(goals, indent=2))


if __name__ == "__main__":
    main()
