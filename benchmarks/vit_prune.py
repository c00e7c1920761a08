"""Vision transformers pruned to a MACs budget: slimkit multi-dimensional (heads + neurons + embedding + tokens,
GP-EI ratio search) vs heads-only pruning (slimkit, and Torch-Pruning 1.6's ViT recipe as the peer), side by side.

1. A DeiT-tiny-style ViT (timm `deit_tiny_patch16_224`: width 192, 3 heads, MLP x4, 12 blocks, class token) with
   7x7 patches on 28x28 Fashion-MNIST (16 patch tokens), and slimkit's T2T-ViT-7 (`small_input`: 7x7 tokens),
   each trained once on a class-balanced subset (cached in benchmarks/cache).
2. Each method prunes the same trained model to `--macs` of its MACs (bisection, or the GP-EI search), then the
   same fine-tune per seed (`--finetune-epochs` of AdamW, linear warm-up `--finetune-warmup` epochs to
   `--finetune-lr`, cosine to 0); test accuracy on the first `--test-limit` test images (0: all 10,000). The
   control "unpruned + the same fine-tune" is the unpruned model given that fine-tune: a fine-tune that costs the
   unpruned model accuracy is unfair to every arm (the earlier protocol's, 2e-4 without warm-up, is the method
   "unpruned + the previous fine-tune (2e-4, no warm-up)").
3. Latency: every model is exported to ONNX and timed by onnxruntime (batch 1 on one thread, batch 32 on all),
   interleaved in rounds (A B A B ...) so machine load hits all alike; `speedup / MACs-red.` is the latency
   speed-up over the MACs reduction (1.0: latency falls exactly as fast as MACs).
The family coverage table is benchmarks/vit_coverage.py.

    python benchmarks/vit_prune.py --models deit_tiny_style --limit 6000 --epochs 10 --test-limit 5000
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import slimkit
from slimkit.data import create_dataset, make_loaders
from slimkit.errors import BudgetError
from slimkit.models import load_weights
from slimkit.nas.prune_ratios import search_prune_ratios
from slimkit.profile import count_macs, count_params
from slimkit.report import markdown_table
from slimkit.train import TrainConfig, Trainer, evaluate, save_weights

HERE = Path(__file__).parent
CACHE = HERE / "cache"
MODELS = {
    "deit_tiny_style": ("timm:deit_tiny_patch16_224", {"img_size": 28, "patch_size": 7}),
    "t2t_vit_7": ("t2t_vit_7", {"small_input": True}),
}


def build(name: str, in_chans: int) -> nn.Module:
    spec, kwargs = MODELS[name]
    return slimkit.create_model(spec, num_classes=10, in_chans=in_chans, **kwargs)


def recipe(epochs: int, lr: float, seed: int, warmup: float) -> TrainConfig:
    return TrainConfig(epochs=epochs, lr=lr, optimizer="adamw", weight_decay=0.05, warmup_epochs=warmup,
                       label_smoothing=0.1, seed=seed, progress=False)


def _baseline_paths(args, name: str, info) -> tuple[Path, Path]:
    """The cached weights and the training run's folder (its metrics.jsonl: the baseline's per-epoch validation)."""
    lr = "" if args.lr == 1e-3 else f"_lr{args.lr:g}"  # (the default's files keep their earlier names)
    return (CACHE / f"vit_{name}_{info.name}_{args.limit}_{args.epochs}ep{lr}.safetensors",
            CACHE / f"vit_{name}_{args.limit}_{args.epochs}ep{lr}_run")


def baseline_history(args, name: str, info) -> list[dict]:
    """The baseline's per-epoch rows (train loss, validation accuracy), when its run folder is still cached."""
    metrics = _baseline_paths(args, name, info)[1] / "metrics.jsonl"
    return [json.loads(line) for line in metrics.read_text().splitlines() if line] if metrics.is_file() else []


def baseline(args, name: str, loaders, info) -> nn.Module:
    path, run = _baseline_paths(args, name, info)
    torch.manual_seed(0)
    model = build(name, info.in_chans)
    if path.is_file():
        load_weights(model, path, strict=True)
        return model
    t0 = time.perf_counter()
    Trainer(model, recipe(args.epochs, args.lr, 0, 1.0), loaders.train, loaders.val, out_dir=run).fit(resume=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, path)
    print(f"{name}: baseline trained in {time.perf_counter() - t0:.0f}s", flush=True)
    return model


# -- the methods: each returns a pruned copy at (or as close as it can get to) the MACs target
def _bisect(make, target: float, x: torch.Tensor, base: float, hi: float = 0.9, steps: int = 10):
    """The least pruning `make(ratio)` whose MACs meet the target; if none does, the buildable candidate with the
    fewest MACs (heads-only pruning of a 3-head model cannot reach 60%: its row says what it reached)."""
    lo, best, fewest = 0.0, None, None
    for _ in range(steps):
        mid = (lo + hi) / 2
        try:
            m = make(mid)
        except (RuntimeError, BudgetError):  # pruned too far to build (e.g. a layer left without heads)
            hi = mid
            continue
        macs = count_macs(m, x)
        if fewest is None or macs < fewest[0]:
            fewest = (macs, m)
        if macs <= target * base:
            best, hi = m, mid
        else:
            lo = mid
    if best is None and fewest is None:
        raise BudgetError("no candidate could be built")
    return best if best is not None else fewest[1]


def tp_vit(model: nn.Module, x: torch.Tensor, ratio: float, heads_only: bool, calib) -> nn.Module:
    """Torch-Pruning 1.6's ViT recipe (its examples/transformers): whole heads (`prune_num_heads`) and, unless
    heads_only, the MLP and embedding channels by the same ratio; Taylor importance on the calibration batches."""
    import torch_pruning as tp

    m = copy.deepcopy(model)
    attn = {mod.qkv: mod for mod in m.modules() if hasattr(mod, "qkv") and type(getattr(mod, "num_heads", None)) is int
            and isinstance(mod.qkv, nn.Linear)}
    ignored = [m.get_classifier(), *[mod for name, mod in m.named_modules() if name.startswith("tokens.")]]
    if heads_only:  # nothing but the attention heads: every other producer of channels is ignored
        ignored += [mod for mod in m.modules() if isinstance(mod, (nn.Linear, nn.Conv2d)) and mod not in attn]
    imp = tp.importance.TaylorImportance()
    pruner = tp.pruner.MetaPruner(m, x, importance=imp, pruning_ratio=ratio, global_pruning=False,
                                  ignored_layers=ignored, num_heads={q: a.num_heads for q, a in attn.items()},
                                  prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio)
    m.zero_grad()
    for xb, yb in calib:
        nn.functional.cross_entropy(m(xb), yb).backward()
    pruner.step()
    m.zero_grad(set_to_none=True)
    if any(pruner.num_heads[q] == 0 for q in attn):
        raise RuntimeError("Torch-Pruning removed every head of a layer")
    for q, a in attn.items():
        a.num_heads = pruner.num_heads[q]
        if hasattr(a, "head_dim"):
            a.head_dim = q.out_features // (3 * a.num_heads)
        if hasattr(a, "attn_dim"):
            a.attn_dim = a.num_heads * a.head_dim
    return m


def methods(base: nn.Module, x: torch.Tensor, target: float, calib, held_out, seed: int, queries: int,
            steps: int = 10, ratios: dict[str, float] | None = None):
    base_macs = count_macs(base, x)

    def gp_search(**kwargs):  # the defaults: heads, neurons, embed, tokens; Taylor importance
        r = search_prune_ratios(base, x, macs_target=target, data=calib, eval_data=held_out, queries=queries,
                                seed=seed, **kwargs)
        return r.model, {"ratios": r.ratios, "searched": r.searched_ratios, "proxy": r.proxy}

    return {
        "slimkit heads only": lambda: (_bisect(lambda r: slimkit.prune(base, x, ratio=r, dims=("heads",)),
                                               target, x, base_macs), {}),
        "torch-pruning heads only": lambda: (_bisect(lambda r: tp_vit(base, x, r, True, calib), target, x,
                                                     base_macs, steps=steps), {}),
        "torch-pruning heads + channels": lambda: (_bisect(lambda r: tp_vit(base, x, r, False, calib), target, x,
                                                           base_macs, steps=steps), {}),
        "slimkit default (all channel groups)": lambda: (slimkit.prune(base, x, macs_target=target), {}),
        "slimkit multi-dimensional, GP-EI": gp_search,
        "slimkit multi-dimensional, GP-EI, HSIC importance": lambda: gp_search(importance="hsic"),
        CONTROL: lambda: (copy.deepcopy(base), {}),  # control: what the fine-tune alone does
        PREVIOUS_FT: lambda: (copy.deepcopy(base), {}),  # the earlier protocol's fine-tune (the diagnosis)
        "slimkit at --ratios": lambda: (slimkit.prune(base, x, ratios=ratios, importance="hsic", data=calib),
                                        {"ratios": ratios}),
    }


CONTROL = "unpruned + the same fine-tune"
PREVIOUS_FT = "unpruned + the previous fine-tune (2e-4, no warm-up)"
UNPRUNED = ("unpruned", CONTROL, PREVIOUS_FT)  # rows without a MACs target
DEFAULT_METHODS = (CONTROL, "slimkit multi-dimensional, GP-EI", "torch-pruning heads + channels",
                   "torch-pruning heads only")


def finetune_recipe(args, label: str, seed: int) -> TrainConfig:
    """The one fine-tune every arm gets: linear warm-up (fresh AdamW's first steps are sign steps of the full lr)
    then cosine to 0. The PREVIOUS_FT control replays the earlier protocol (no warm-up, 2e-4) on the unpruned model."""
    if label == PREVIOUS_FT:
        return recipe(args.finetune_epochs, 2e-4, seed, 0.0)
    return recipe(args.finetune_epochs, args.finetune_lr, seed, args.finetune_warmup)


def accuracy_table(args) -> list[dict]:
    splits = create_dataset(args.data, seed=0, limit=args.limit)
    loaders = make_loaders(splits, 128)
    info = splits.info
    x = torch.randn(1, info.in_chans, *info.image_size)
    test = loaders.test
    if args.test_limit:  # the first N test images (a smaller, still honest run when time is short)
        from torch.utils.data import DataLoader, Subset

        test = DataLoader(Subset(loaders.test.dataset, range(args.test_limit)), batch_size=256)
    rows = []
    for name in args.models:
        if args.shapes_only:  # latency depends on the shapes alone: random weights, no training, no accuracy
            torch.manual_seed(0)
            base = build(name, info.in_chans).eval()
        else:
            base = baseline(args, name, loaders, info).eval()
        calib = list(itertools.islice(iter(loaders.train), args.calib_batches))
        held_out = list(loaders.val)
        base_macs = count_macs(base, x)
        base_acc = {} if args.shapes_only else {"test_acc": evaluate(base, test)["acc"]}
        if not args.shapes_only:
            base_acc["baseline_history"] = baseline_history(args, name, info)
        rows.append({"model": name, "method": "unpruned", "seed": 0, **base_acc, "MACs": base_macs,
                     "params": count_params(base), "onnx": _onnx(base, x, f"{args.results}_{name}_unpruned")})
        print(rows[-1], flush=True)
        # each method prunes the trained model once (deterministic; the GP-EI search with --search-seed), in the order
        # of --methods; then the same fine-tune runs from each pruned model, seed by seed (every method's seed 0
        # first: a run cut short still has whole seeds)
        makers = methods(base, x, args.macs, calib, held_out, args.search_seed, args.search_queries, args.bisect_steps,
                         args.ratios)
        pruned_models = {}
        for label in args.methods:
            torch.manual_seed(args.search_seed)
            t0 = time.perf_counter()
            try:
                pruned0, extra = makers[label]()
            except (BudgetError, RuntimeError) as e:
                rows.append({"model": name, "method": label, "error": f"{type(e).__name__}: {e}"})
                print(rows[-1], flush=True)
                continue
            pruned0.eval()
            macs = count_macs(pruned0, x)
            info_row = {"model": name, "method": label, "MACs": macs, "MACs_kept": macs / base_macs,
                        "reached_target": macs <= args.macs * base_macs, "prune_s": round(time.perf_counter() - t0, 1),
                        **extra}
            if args.shapes_only:
                rows.append({**info_row, "seed": 0, "params": count_params(pruned0),
                             "onnx": _onnx(pruned0, x, f"{args.results}_{name}_{label}_shapes")})
                print(rows[-1], flush=True)
                continue
            pruned_models[label] = (pruned0, {**info_row, "acc_before_finetune": evaluate(pruned0, test)["acc"]})
            print(label, pruned_models[label][1], flush=True)
        for seed in args.seeds:
            for label, (pruned0, info_row) in pruned_models.items():
                pruned = copy.deepcopy(pruned0)
                Trainer(pruned, finetune_recipe(args, label, seed), loaders.train).fit()
                pruned.eval()
                onnx = _onnx(pruned, x, f"{args.results}_{name}_{label}_{seed}")  # (one file per run: runs split
                # over processes never write the same file)
                rows.append({**info_row, "seed": seed, "test_acc": evaluate(pruned, test)["acc"],
                             "params": count_params(pruned), "onnx": onnx})
                print(rows[-1], flush=True)
                _write(args.results, {"args": vars(args), "rows": rows})
    return rows


def _onnx(model: nn.Module, x: torch.Tensor, tag: str) -> str:
    path = CACHE / "onnx" / (tag.replace(" ", "_").replace(",", "").replace("+", "p").replace("/", "_") + ".onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    slimkit.export_onnx(model.eval(), path, x, dynamic_batch=True)
    return str(path)


def latency(rows: list[dict], rounds: int = 5) -> None:
    """onnxruntime median ms at batch 1 (one thread) and 32 (all threads), interleaved rounds: one ONNX file per
    (model, method), since a method's seeds differ in weights only, not in shapes."""
    import onnxruntime as ort

    timed = {}  # (model, method) -> the file timed for it
    for r in rows:
        if "onnx" in r:
            timed.setdefault((r["model"], r["method"]), r["onnx"])
    sessions = {}
    for r in rows:
        if "onnx" not in r or timed[(r["model"], r["method"])] != r["onnx"]:
            continue
        for key, (batch, threads) in {"ort_b1_1t_ms": (1, 1), "ort_b32_ms": (32, 0)}.items():
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            sessions[(r["onnx"], key)] = (ort.InferenceSession(r["onnx"], opts, providers=["CPUExecutionProvider"]),
                                          batch)
    times: dict[tuple[str, str], list[float]] = {k: [] for k in sessions}
    for _ in range(rounds):
        for (path, key), (sess, batch) in sessions.items():
            inp = sess.get_inputs()[0]
            feed = {inp.name: np.random.rand(batch, *inp.shape[1:]).astype(np.float32)}
            sess.run(None, feed)
            t = []
            for _ in range(10 if batch == 1 else 3):
                t0 = time.perf_counter()
                sess.run(None, feed)
                t.append(time.perf_counter() - t0)
            times[(path, key)].append(statistics.median(t) * 1000)
    for r in rows:
        for key in ("ort_b1_1t_ms", "ort_b32_ms"):
            path = timed.get((r["model"], r["method"]))
            if "onnx" in r and (path, key) in times:
                r[key] = statistics.median(times[(path, key)])


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for (model, method), group in itertools.groupby(sorted((r for r in rows if "MACs" in r),
                                                           key=lambda r: (r["model"], r["method"] != "unpruned",
                                                                          r["method"])),
                                                    key=lambda r: (r["model"], r["method"])):
        g = list(group)
        base = next(r for r in rows if r["model"] == model and r["method"] == "unpruned")
        control = [r["test_acc"] for r in rows if r["model"] == model and r["method"] == CONTROL and "test_acc" in r]
        row = {"model": model, "method": method, "seeds": len(g)}
        if "test_acc" in base:  # (--shapes-only rows have latency, no accuracy)
            accs = [r["test_acc"] for r in g]
            row.update({"test_acc": f"{np.mean(accs):.4f} ± {np.std(accs):.4f}" if len(g) > 1 else f"{accs[0]:.4f}",
                        "vs unpruned": f"{100 * (np.mean(accs) - base['test_acc']):+.2f}",
                        "vs control": f"{100 * (np.mean(accs) - np.mean(control)):+.2f}" if control else "",
                        "before fine-tune": "" if method == "unpruned" else
                        f"{np.mean([r['acc_before_finetune'] for r in g]):.4f}"})
        row |= {"MACs kept": f"{np.mean([r['MACs'] for r in g]) / base['MACs']:.3f}",
               "params": f"{np.mean([r['params'] for r in g]) / 1e6:.2f}M",
               "target met": "" if method in UNPRUNED else "yes" if all(r.get("reached_target") for r in g) else "no"}
        for key in ("ort_b1_1t_ms", "ort_b32_ms"):
            if all(key in r for r in g):
                ms = np.mean([r[key] for r in g])
                row[key] = f"{ms:.3f}"
                if method not in UNPRUNED:
                    red = base["MACs"] / np.mean([r["MACs"] for r in g])
                    row[f"speedup/MACs-red. {key[4:-3]}"] = f"{base[key] / ms / red:.2f}"
        out.append(row)
    return out


def _write(name: str, data: dict) -> None:
    out = HERE / "results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1, default=str))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--data", default="fashion-mnist")
    ap.add_argument("--limit", type=int, default=6000, help="class-balanced training subset")
    ap.add_argument("--epochs", type=int, default=10, help="baseline epochs")
    ap.add_argument("--lr", type=float, default=1e-3, help="baseline AdamW peak learning rate")
    ap.add_argument("--finetune-epochs", type=int, default=1)
    ap.add_argument("--finetune-lr", type=float, default=2e-5, help="fine-tune AdamW peak learning rate (2e-5 leaves "
                    "the unpruned control within 0.3 points on DeiT; 1e-4 costs it 1.5, README)")
    ap.add_argument("--finetune-warmup", type=float, default=0.3, help="fine-tune linear warm-up (epochs)")
    ap.add_argument("--macs", type=float, default=0.6, help="MACs to keep (fraction)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--calib-batches", type=int, default=4)
    ap.add_argument("--test-limit", type=int, default=0, help="evaluate on the first N test images (0: all)")
    ap.add_argument("--search-queries", type=int, default=24)
    ap.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), help="labels of methods() to run")
    ap.add_argument("--search-seed", type=int, default=0, help="seed of the GP-EI ratio search")
    ap.add_argument("--bisect-steps", type=int, default=10, help="bisection steps of the ratio-bisected methods")
    ap.add_argument("--ratios", type=lambda s: {k: float(v) for k, v in (kv.split("=") for kv in s.split(","))},
                    default=None, help='shares of the "slimkit at --ratios" method: heads=0.5,neurons=0.2,tokens=0.15')
    ap.add_argument("--shapes-only", action="store_true", help="random weights, no training or accuracy: the pruned "
                    "shapes (at --ratios, or the peer's bisected ratio) for latency only")
    ap.add_argument("--baseline-only", action="store_true", help="train (cache) the baselines and stop")
    ap.add_argument("--latency-only", action="store_true", help="re-time the ONNX files of --results")
    ap.add_argument("--no-latency", action="store_true", help="accuracy only (a niced run): time the ONNX files "
                    "later with --latency-only at normal priority")
    ap.add_argument("--results", default="vit_prune")
    ap.add_argument("--combine", nargs="+", default=None, help="--latency-only: the rows of these result files")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.baseline_only:
        splits = create_dataset(args.data, seed=0, limit=args.limit)
        loaders = make_loaders(splits, 128)
        for name in args.models:
            base = baseline(args, name, loaders, splits.info)
            print(name, "validation by epoch", [r.get("val_acc") for r in baseline_history(args, name, splits.info)],
                  flush=True)
            print(name, "test", evaluate(base, loaders.test)["acc"], flush=True)
        return
    runs = {args.results: vars(args)}
    if args.latency_only:  # re-time (at normal priority) the ONNX files of one or more accuracy runs
        files = {n: json.loads((HERE / "results" / f"{n}.json").read_text()) for n in args.combine or [args.results]}
        runs = {n: f.get("args", f.get("runs")) for n, f in files.items()}
        seen: set = set()  # a row per (model, method, seed): runs that split the methods each have the unpruned row
        rows = [r for f in files.values() for r in f["rows"]
                if (key := (r["model"], r["method"], r.get("seed"))) not in seen and not seen.add(key)]
    else:
        rows = accuracy_table(args)
    if not args.no_latency:
        latency(rows)
    table = summarise(rows)
    _write(args.results, {"args": vars(args), "runs": runs, "rows": rows, "summary": table})
    print(markdown_table(table))


if __name__ == "__main__":
    main()
