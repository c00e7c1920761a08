"""slimkit vs Torch-Pruning (DepGraph), side by side on the same trained model and the same fine-tune budget.

1. Accuracy / MACs / latency: a CIFAR-style ResNet trained on Fashion-MNIST once (cached in benchmarks/cache),
   pruned to 1/k of its MACs by each method (both searched to the same MACs target by bisection), fine-tuned
   with the same slimkit Trainer settings, then measured: test accuracy, MACs, params, onnxruntime batch-1 latency,
   and speed-up / MACs-reduction (1.0 = latency falls as fast as MACs).
2. `--coverage`: one model per timm / torchvision family (200), pruned to half the MACs by each library: runs,
   keeps its output shape, >= 1.25x fewer MACs, ONNX parity; resumable, one child process per model
   (`benchmarks/prune_coverage.py`).

    python benchmarks/prune_vs_torch_pruning.py --model resnet20 --epochs 3 --finetune-epochs 1 --limit 20000
    nice -n 19 python benchmarks/prune_vs_torch_pruning.py --coverage [--chunk 1/4]
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

import slimkit
from slimkit.data import create_dataset, make_loaders
from slimkit.models import load_weights
from slimkit.profile import channel_multiple, count_macs, count_params, measure_latency
from slimkit.prune import ChexCallback, PruneConfig, Pruner
from slimkit.report import markdown_table
from slimkit.train import TrainConfig, Trainer, evaluate, save_weights

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
    model = slimkit.create_model(args.model, num_classes=info.num_classes, in_chans=info.in_chans)
    fraction = target_macs / count_macs(model, x)
    steps = args.epochs * len(loaders.train)
    chex = ChexCallback(model, x, macs_target=fraction, ramp_steps=int(0.75 * steps),
                        interval=max(1, len(loaders.train) // 4), importance="l2", data=calib, round_to=round_to)
    Trainer(model, _recipe(args), loaders.train, callbacks=[chex]).fit()
    pruned = chex.finalize()
    if count_macs(pruned, x) <= target_macs:
        return pruned
    return _bisect(lambda r: slimkit.prune(pruned, x, ratio=r, round_to=round_to), target_macs, x)


def _recipe(args) -> TrainConfig:
    """The baseline's training (CHEX trains from scratch with the same)."""
    return TrainConfig(epochs=args.epochs, lr=args.lr, warmup_epochs=args.warmup, progress=False)


def baseline(args, loaders, info):
    recipe = "" if (args.lr, args.warmup) == (0.1, 0.0) else f"_lr{args.lr}_wu{args.warmup}"
    path = HERE / "cache" / f"{args.model}_{info.name}_{args.epochs}ep_{args.limit}{recipe}.safetensors"
    model = slimkit.create_model(args.model, num_classes=info.num_classes, in_chans=info.in_chans)
    if path.is_file():
        load_weights(model, path, strict=True)
        return model
    Trainer(model, _recipe(args), loaders.train, loaders.val).fit()
    save_weights(model, path)
    return model


def accuracy_table(args):
    splits = create_dataset(args.data, seed=0, limit=args.limit)
    loaders = make_loaders(splits, 128)
    info = splits.info
    x = torch.randn(1, info.in_chans, *info.image_size)
    base = baseline(args, loaders, info).eval()
    calib = [b for _, b in zip(range(8), loaders.train, strict=False)]
    base_macs, base_lat = count_macs(base, x), _latency(base, x)
    rows = [{"method": "unpruned", "k": 1, "test_acc": evaluate(base, loaders.test)["acc"], "MACs": base_macs,
             "params": count_params(base), **base_lat}]
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
    if args.methods:
        unknown = set(args.methods) - set(builders)
        if unknown:
            raise SystemExit(f"unknown --methods {sorted(unknown)}; choose from {sorted(builders)}")
        builders = {n: b for n, b in builders.items() if n in args.methods}
    for k in args.speedups:
        for name, build in builders.items():
            t0 = time.perf_counter()
            pruned = build(k)
            Trainer(pruned, TrainConfig(epochs=args.finetune_epochs, lr=0.01, progress=False), loaders.train).fit()
            macs, lat = count_macs(pruned, x), _latency(pruned, x)
            row = {"method": name, "k": k, "test_acc": evaluate(pruned, loaders.test)["acc"], "MACs": macs,
                   "params": count_params(pruned), **lat}
            for key in LATENCY:
                tag = key.removeprefix("ort_").removesuffix("_ms")
                row[f"speedup_{tag}/MACs-red."] = (base_lat[key] / lat[key]) / (base_macs / macs)
            rows.append({**row, "time_s": round(time.perf_counter() - t0, 1)})
            print(rows[-1], flush=True)
    return rows


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
    ap.add_argument("--speedups", type=float, nargs="+", default=[2.0, 3.0])
    ap.add_argument("--coverage", action="store_true", help="run the family coverage sweep instead (prune_coverage)")
    ap.add_argument("--skip-coverage", action="store_true", help=argparse.SUPPRESS)  # (the old default; kept)
    prune_coverage.add_args(ap.add_argument_group("coverage"))
    ap.add_argument("--methods", nargs="+", default=None,
                    help="rerun only these accuracy rows (names as in the table) and merge them into the results "
                         "file (each row's speed-up ratios use the unpruned latency of its own run)")
    ap.add_argument("--results", default="prune_accuracy", help="name of the accuracy JSON under benchmarks/results")
    args = ap.parse_args()
    torch.manual_seed(0)
    meta = {"args": vars(args), "torch_pruning_version": __import__("torch_pruning").__version__}
    if args.coverage:
        prune_coverage.coverage(args)
        return
    rows = accuracy_table(args)
    print(markdown_table(rows))
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
