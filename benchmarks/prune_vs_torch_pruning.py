"""slimkit vs Torch-Pruning (DepGraph), side by side on the same trained model and the same fine-tune budget.

1. Accuracy / MACs / latency: a CIFAR-style ResNet trained on Fashion-MNIST once (cached in benchmarks/cache),
   pruned to 1/k of its MACs by each method (both searched to the same MACs target by bisection), fine-tuned
   with the same slimkit Trainer settings, then measured: test accuracy, MACs, params, onnxruntime batch-1 latency,
   and speed-up / MACs-reduction (1.0 = latency falls as fast as MACs).
2. `--coverage`: one model per timm / torchvision family (200), pruned to half the MACs by each library: runs,
   keeps its output shape, >= 1.25x fewer MACs, ONNX parity; resumable, one child process per model
   (`benchmarks/prune_coverage.py`).

    python benchmarks/prune_vs_torch_pruning.py --model resnet20 --epochs 3 --finetune-epochs 1 --limit 20000
    python benchmarks/prune_vs_torch_pruning.py --model resnet20 --epochs 4 --finetune-epochs 2 --limit 10000 \
        --speedups 2 --seeds 0 1 --interleaved --methods "slimkit l1" "slimkit l1 default" \
        "torch-pruning magnitude" --results prune_default_resnet20   # the default vs uniform, 2 seeds
    nice -n 19 python benchmarks/prune_vs_torch_pruning.py --coverage [--chunk 1/4]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

import slimkit
from slimkit.data import create_dataset, make_loaders
from slimkit.export import export_onnx
from slimkit.models import load_weights
from slimkit.profile import channel_multiple, compare_onnx_latency, count_macs, count_params, measure_latency
from slimkit.prune import ChexCallback, PruneConfig, Pruner
from slimkit.report import markdown_table
from slimkit.train import TrainConfig, Trainer, evaluate, save_weights, seeded

sys.path.insert(0, str(Path(__file__).parent))
import prune_coverage  # noqa: E402  (the family sweep, a sibling script)

HERE = Path(__file__).parent


def _bisect(make, target_macs, x, hi=0.95):
    lo, best = 0.0, None
    for _ in range(12):
        mid = (lo + hi) / 2
        m = make(mid)
        if count_macs(m, x) <= target_macs:
            best, hi = m, mid
        else:
            lo = mid
    return best if best is not None else make(hi)


LATENCY = {"ort_b1_ms": (1, None), "ort_b32_ms": (32, None), "ort_b1_1thread_ms": (1, 1)}  # (batch, threads)
UNIFORM = {"allocation": "uniform"}  # the rows measured before the latency allocation became the default


def _latency(model, x):
    """onnxruntime median latency (ms) at batch 1 and 32 on all cores, and batch 1 on one thread."""
    return {key: measure_latency(model, x.shape[1:], backend="onnxruntime", batch=b, threads=t, repeats=30,
                                 min_time_s=1.0).median_ms for key, (b, t) in LATENCY.items()}


def tp_prune(model, x, ratio, importance, calib):
    import torch_pruning as tp

    m = copy.deepcopy(model)
    imp = {"magnitude": tp.importance.MagnitudeImportance(p=1), "taylor": tp.importance.TaylorImportance()}[importance]
    head = m.get_classifier() if hasattr(m, "get_classifier") else None
    pruner = tp.pruner.MetaPruner(m, x, importance=imp, pruning_ratio=ratio, ignored_layers=[head] if head else [])
    if importance == "taylor":
        m.zero_grad()
        for xb, yb in calib:
            nn.functional.cross_entropy(m(xb), yb).backward()
    pruner.step()
    m.zero_grad(set_to_none=True)
    return m


def chex_prune(args, info, loaders, x, target_macs, calib, round_to=None):
    """CHEX: a fresh model trained as long as the baseline while channels are pruned and regrown, each
    re-allocation meeting the ramped MACs budget (a one-shot trim only if the allocation could not reach it)."""
    torch.manual_seed(0)
    model = _create(args, info)
    fraction = target_macs / count_macs(model, x)
    steps = args.epochs * len(loaders.train)
    chex = ChexCallback(model, x, macs_target=fraction, ramp_steps=int(0.75 * steps),
                        interval=max(1, len(loaders.train) // 4), importance="l2", data=calib, round_to=round_to)
    Trainer(model, _recipe(args), loaders.train, callbacks=[chex]).fit()
    pruned = chex.finalize()
    if count_macs(pruned, x) <= target_macs:
        return pruned
    return _bisect(lambda r: slimkit.prune(pruned, x, ratio=r, round_to=round_to), target_macs, x)


def _recipe(args, seed=0) -> TrainConfig:
    """The baseline's training (CHEX trains from scratch with the same)."""
    return TrainConfig(epochs=args.epochs, lr=args.lr, warmup_epochs=args.warmup, progress=False, seed=seed)


def _create(args, info):
    kwargs = {"small_input": True} if args.small_input else {}
    return slimkit.create_model(args.model, num_classes=info.num_classes, in_chans=info.in_chans, **kwargs)


def baseline(args, loaders, info, seed=0):
    recipe = "" if (args.lr, args.warmup) == (0.1, 0.0) else f"_lr{args.lr}_wu{args.warmup}"
    recipe += ("_small" if args.small_input else "") + (f"_s{seed}" if seed else "")
    path = HERE / "cache" / f"{args.model}_{info.name}_{args.epochs}ep_{args.limit}{recipe}.safetensors"
    with seeded(seed):
        model = _create(args, info)
    if path.is_file():
        load_weights(model, path, strict=True)
        return model
    Trainer(model, _recipe(args, seed), loaders.train, loaders.val).fit()
    save_weights(model, path)
    return model


def accuracy_table(args, seed=0):
    """One row per (method, k) on the baseline trained with `seed` (the data split is the same for every seed).
    With `--interleaved` each model is exported to ONNX instead of timed on its own, and `interleaved_latency`
    times them all together at the end."""
    splits = create_dataset(args.data, seed=0, limit=args.limit)
    loaders = make_loaders(splits, 128, seed=seed)
    info = splits.info
    x = torch.randn(1, info.in_chans, *info.image_size)
    base = baseline(args, loaders, info, seed).eval()
    calib = [b for _, b in zip(range(8), loaders.train, strict=False)]
    test = loaders.test
    if args.test_limit:  # the first N test images (a smaller, still honest run when time is short)
        test = DataLoader(Subset(loaders.test.dataset, range(args.test_limit)), batch_size=256)
    onnx_dir = HERE / "cache" / "prune_accuracy_onnx" / f"{args.results}_{args.model}_s{seed}"

    def measure(model, i):
        if not args.interleaved:
            return _latency(model, x)
        path = onnx_dir / f"{i}.onnx"
        export_onnx(model, path, x)
        return {"onnx": str(path), "input": list(x.shape[1:])} if i == 0 else {"onnx": str(path)}

    base_macs, base_lat = count_macs(base, x), measure(base, 0)
    rows = [{"method": "unpruned", "k": 1, "seed": seed, "test_acc": evaluate(base, test)["acc"],
             "MACs": base_macs, "params": count_params(base), **base_lat}]
    @functools.cache
    def latency_pruner() -> Pruner:  # costs estimated once, reused by bisection (and only if that row runs)
        return Pruner(base, (x,), PruneConfig(ratio=0.5, allocation="global_latency", round_to="auto"))
    block = channel_multiple()
    methods = {
        "slimkit l1": lambda r: slimkit.prune(base, x, ratio=r, importance="l1", **UNIFORM),
        "slimkit l1 round_to=8": lambda r: slimkit.prune(base, x, ratio=r, importance="l1", round_to=8, **UNIFORM),
        f"slimkit l1 round_to=auto ({block})": lambda r: slimkit.prune(base, x, ratio=r, round_to="auto",
                                                                        **UNIFORM),
        f"slimkit l1 default ({block})": lambda r: slimkit.prune(base, x, ratio=r),
        f"slimkit l1 latency-aware round_to=auto ({block})": lambda r: latency_pruner().apply(r),
        "slimkit taylor": lambda r: slimkit.prune(base, x, ratio=r, importance="taylor", data=calib, **UNIFORM),
        "slimkit di": lambda r: slimkit.prune(base, x, ratio=r, importance="di", data=calib, **UNIFORM),
        "torch-pruning magnitude": lambda r: tp_prune(base, x, r, "magnitude", calib),
        "torch-pruning taylor": lambda r: tp_prune(base, x, r, "taylor", calib),
    }
    builders = {name: (lambda k, make=make: _bisect(make, base_macs / k, x)) for name, make in methods.items()}
    builders["slimkit chex (from scratch)"] = lambda k: chex_prune(args, info, loaders, x, base_macs / k, calib)
    builders[f"slimkit chex round_to=auto ({block})"] = lambda k: chex_prune(args, info, loaders, x, base_macs / k,
                                                                            calib, round_to="auto")
    if args.methods:  # a name without this CPU's block ("slimkit l1 default") means the one with it
        bare = {n.rsplit(" (", 1)[0]: n for n in builders if n.endswith(f" ({block})")}
        args.methods = [bare.get(n, n) for n in args.methods]
        unknown = set(args.methods) - set(builders)
        if unknown:
            raise SystemExit(f"unknown --methods {sorted(unknown)}; choose from {sorted(builders)}")
        builders = {n: b for n, b in builders.items() if n in args.methods}
    for k in args.speedups:
        for name, build in builders.items():
            t0 = time.perf_counter()
            with seeded(seed):
                pruned = build(k)
            Trainer(pruned, TrainConfig(epochs=args.finetune_epochs, lr=0.01, progress=False, seed=seed),
                    loaders.train).fit()
            macs, lat = count_macs(pruned, x), measure(pruned, len(rows))
            row = {"method": name, "k": k, "seed": seed, "test_acc": evaluate(pruned, test)["acc"],
                   "MACs": macs, "params": count_params(pruned), **lat}
            for key in LATENCY if not args.interleaved else ():
                tag = key.removeprefix("ort_").removesuffix("_ms")
                row[f"speedup_{tag}/MACs-red."] = (base_lat[key] / lat[key]) / (base_macs / macs)
            rows.append({**row, "time_s": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
    return rows


INTERLEAVED = {"b1_t1": (1, 1), "b32": (32, None)}  # (batch, threads)


def interleaved_latency(rows, rounds):
    """onnxruntime latency of every row's model (CPU time of the work; medians), timed in turn round after round
    at normal priority in this one process, so a busy machine slows them alike; speed-ups are against the unpruned
    model of the same seed."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)  # training ran at nice 19; timing at 0 (root may lower it again)
    except OSError:
        pass
    paths = {str(i): r.pop("onnx") for i, r in enumerate(rows)}
    shape = tuple([r.pop("input") for r in rows if "input" in r][0])
    for tag, (batch, threads) in INTERLEAVED.items():
        lat = compare_onnx_latency(paths, shape, batch=batch, threads=threads, rounds=rounds,
                                   block_s=0.3 if batch == 1 else 0.0)
        for i, r in enumerate(rows):
            r[f"{tag}_ms"] = round(lat[str(i)].cpu_median_ms, 4)
    for r in rows:
        base = next(b for b in rows if b["method"] == "unpruned" and b["seed"] == r["seed"])
        for tag in INTERLEAVED:
            speedup = base[f"{tag}_ms"] / r[f"{tag}_ms"]
            r[f"speed-up {tag}"] = round(speedup, 3)
            r[f"speed-up {tag} / MACs red."] = round(speedup / (base["MACs"] / r["MACs"]), 3)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except OSError:
        pass


def seed_means(rows):
    """Per (method, k): the mean over seeds of accuracy and of the speed-up figures, and the accuracy range."""
    out = []
    for key in dict.fromkeys((r["method"], r["k"]) for r in rows):
        group = [r for r in rows if (r["method"], r["k"]) == key]
        accs = [r["test_acc"] for r in group]
        mean = {"method": key[0], "k": key[1], "seeds": len(group), "test_acc mean": round(sum(accs) / len(accs), 4),
                "min": min(accs), "max": max(accs), "MACs": group[0]["MACs"], "params": group[0]["params"]}
        for f in [f for f in group[0] if f.startswith("speed-up")]:
            mean[f] = round(sum(r[f] for r in group) / len(group), 3)
        out.append(mean)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=0.1, help="baseline (and CHEX) peak learning rate")
    ap.add_argument("--warmup", type=float, default=0.0, help="baseline (and CHEX) warm-up epochs (VGG-16: 0.5 at "
                    "lr 0.02; at 0.1 without it, it does not train in 3 epochs)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test images (0: all)")
    ap.add_argument("--speedups", type=float, nargs="+", default=[2.0, 3.0])
    ap.add_argument("--coverage", action="store_true", help="run the family coverage sweep instead (prune_coverage)")
    ap.add_argument("--skip-coverage", action="store_true", help=argparse.SUPPRESS)  # (the old default; kept)
    prune_coverage.add_args(ap.add_argument_group("coverage"))
    ap.add_argument("--methods", nargs="+", default=None,
                    help="rerun only these accuracy rows (names as in the table) and merge them into the results "
                         "file (each row's speed-up ratios use the unpruned latency of its own run)")
    ap.add_argument("--results", default="prune_accuracy", help="name of the accuracy JSON under benchmarks/results")
    ap.add_argument("--small-input", action="store_true", help="model built with small_input=True (MobileNetV2 "
                    "at 28x28: stem and first stage at stride 1)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="baseline + fine-tune seeds (one baseline "
                    "each); the table adds the mean over seeds")
    ap.add_argument("--interleaved", action="store_true", help="time all models together at the end (ONNX, CPU "
                    "time, batch 1 one thread and batch 32) instead of each on its own as it is built")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    args = ap.parse_args()
    torch.manual_seed(0)
    meta = {"args": vars(args), "torch_pruning_version": __import__("torch_pruning").__version__}
    if args.coverage:
        prune_coverage.coverage(args)
        return
    rows = [r for seed in args.seeds for r in accuracy_table(args, seed)]
    if args.interleaved:
        interleaved_latency(rows, args.rounds)
    print(markdown_table(rows))
    if len(args.seeds) > 1:
        meta["mean_over_seeds"] = seed_means(rows)
        print(markdown_table(meta["mean_over_seeds"]))
    path = HERE / "results" / f"{args.results}.json"
    if args.methods and path.is_file():  # merge: rerun rows replace their old versions, the rest stay
        old = json.loads(path.read_text())["accuracy"]
        new = {(r["method"], r["k"]): r for r in rows if r["method"] != "unpruned"}
        rows = [new.pop((r["method"], r["k"]), r) for r in old] + list(new.values())
    _write(f"{args.results}.json", {**meta, "accuracy": rows})


def _write(name, data):
    out = HERE / "results" / name
    out.write_text(json.dumps(data, indent=1, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
