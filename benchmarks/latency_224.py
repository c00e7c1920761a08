"""Does latency fall as fast as MACs? slimkit's default prune call vs Torch-Pruning on real architectures at 224.

Each model (timm / torchvision, 1000 classes, random init: latency does not depend on the weights) is pruned to half
its MACs by slimkit's *default* call, `slimkit.prune(model, x, macs_target=0.5)`, and by Torch-Pruning's usual
recipe (MagnitudeImportance, MetaPruner with its default settings, the classifier ignored, the channel ratio
bisected to the same MACs; ViTs with `num_heads` and its attention forward as in its timm example). All versions of
one model are exported to ONNX and timed *interleaved* in this process with onnxruntime: batch 1 on one thread and
batch 32 on all cores, in rounds (A B C, B C A, ...); each round gives the ratio base / pruned, and the table quotes
the median ratio over rounds. Times are CPU time of the work (see `interleaved`): on a machine shared with other jobs
the wall clock mostly measures the scheduler; wall-clock ratios are kept in the JSON too.
speed-up / MACs-red. = 1.0 means latency falls as fast as MACs.

    python benchmarks/latency_224.py                       # all models, ~30-60 min on 2 cores
    python benchmarks/latency_224.py --models timm:resnet50 --variant 'auto={"round_to": "auto"}'

On a shared machine, prune niced and time at normal priority: `--phase prune` builds, checks and exports every
version to `--onnx-dir` (with their MACs in info.json) and times nothing; `--phase time` then times those files.

    nice -n 19 python benchmarks/latency_224.py --models timm:levit_128s --onnx-dir /tmp/lat --phase prune
    python benchmarks/latency_224.py --models timm:levit_128s --onnx-dir /tmp/lat --phase time --results latency_224_vit
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

import slimkit
from slimkit.export import export_onnx
from slimkit.profile import channel_multiple, count_macs, count_params, cpu_capability
from slimkit.report import markdown_table

HERE = Path(__file__).parent
MODELS = ["timm:resnet18", "timm:resnet50", "timm:mobilenetv2_100", "timm:mobilenetv3_large_100",
          "timm:efficientnet_b0", "timm:convnext_atto", "timm:regnety_016", "timm:deit_tiny_patch16_224",
          "torchvision:mobilenet_v2", "torchvision:efficientnet_b0", "torchvision:regnet_x_400mf",
          "timm:deit_small_patch16_224"]
SETTINGS = {"b1_1thread": (1, 1), "b32": (32, None)}  # name -> (batch, threads; None = all cores)


# ---------------------------------------------------------------- Torch-Pruning's recipe
def _tp_attention_forward(self, x, *args, **kwargs):
    """timm Attention forward that reads the head count and width from the (pruned) layers, as in TP's example."""
    b, n, _ = x.shape
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = self.q_norm(q), self.k_norm(k)
    x = nn.functional.scaled_dot_product_attention(q, k, v)
    x = x.transpose(1, 2).reshape(b, n, -1)
    return self.proj_drop(self.proj(self.norm(x)))


def tp_prune(model: nn.Module, x: torch.Tensor, ratio: float) -> nn.Module:
    import torch_pruning as tp

    model.train()  # (timm LeViT / EfficientViT-M drop their eval-mode attention-bias cache, which deepcopy refuses)
    m = copy.deepcopy(model).eval()
    model.eval()
    head = m.get_classifier() if hasattr(m, "get_classifier") else None
    if head is None:
        head = [c for c in m.modules() if isinstance(c, nn.Linear)][-1]
    num_heads = {}
    for mod in m.modules():
        if type(mod).__name__ == "Attention" and hasattr(mod, "qkv"):
            mod.forward = _tp_attention_forward.__get__(mod, type(mod))
            num_heads[mod.qkv] = mod.num_heads
    pruner = tp.pruner.MetaPruner(m, x, importance=tp.importance.MagnitudeImportance(), pruning_ratio=ratio,
                                  ignored_layers=[head], num_heads=num_heads)
    pruner.step()
    for mod in m.modules():
        if getattr(mod, "qkv", None) in num_heads:
            mod.num_heads = pruner.num_heads[mod.qkv]
            mod.head_dim = mod.qkv.out_features // (3 * mod.num_heads)
    return m


def tp_to_macs(model: nn.Module, x: torch.Tensor, target: float, steps: int = 10) -> tuple[nn.Module, float]:
    """Torch-Pruning's model at the smallest channel ratio (bisected) whose MACs are <= target, and that ratio."""
    lo, hi, best = 0.0, 0.95, None
    for _ in range(steps):
        mid = (lo + hi) / 2
        cand = tp_prune(model, x, mid)
        if count_macs(cand, x) <= target:
            best, hi = cand, mid
        else:
            lo = mid
    return (best if best is not None else tp_prune(model, x, hi)), hi


TP_CACHE = HERE / "cache" / "latency_224_tp.json"  # spec -> bisected ratio and the bisection's time


def tp_cached(spec: str, model: nn.Module, x: torch.Tensor, target: float) -> tuple[nn.Module, dict]:
    """Torch-Pruning at its bisected ratio; the bisection runs once per model (its ratio and time are cached, the
    peer's result does not change when slimkit does)."""
    cache = json.loads(TP_CACHE.read_text()) if TP_CACHE.is_file() else {}
    if spec in cache:
        return tp_prune(model, x, cache[spec]["ratio"]), cache[spec]
    t0, c0 = time.perf_counter(), time.process_time()
    pruned, ratio = tp_to_macs(model, x, target)
    cache[spec] = {"ratio": ratio, "prune_s": round(time.perf_counter() - t0, 2),
                   "prune_cpu_s": round(time.process_time() - c0, 2)}
    TP_CACHE.parent.mkdir(exist_ok=True)
    TP_CACHE.write_text(json.dumps(cache, indent=1))
    return pruned, cache[spec]


# ---------------------------------------------------------------- interleaved timing
def _session(path: Path, threads: int | None):
    """An onnxruntime session whose worker threads sleep instead of spinning when idle, so the process CPU time
    counts work only."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def interleaved(models: dict[str, nn.Module], x1: torch.Tensor, batch: int, threads: int | None, tmp: Path,
                rounds: int, block_s: float) -> dict[str, dict[str, float]]:
    """Median ms per model and median per-round speed-up over the first model ("base"), timed A B C / B C A / ...

    Two clocks: wall time, and the CPU time of the work (the calling thread's on one thread, where onnxruntime runs
    on the caller; the process's on several). On a machine shared with other jobs the wall clock counts the time
    other processes hold the cores; CPU time does not, so it is the quoted figure (memory and cache contention
    still leak into both)."""
    sess = {}
    for name, m in models.items():
        path = _onnx_path(tmp, name)
        if not path.is_file():
            export_onnx(m, path, x1, check=False)
        sess[name] = _session(path, threads)
    cpu_clock = time.thread_time if threads == 1 else time.process_time
    feed = {"input": np.random.default_rng(0).standard_normal((batch, *x1.shape[1:])).astype(np.float32)}
    names = list(sess)
    for s in sess.values():  # warm-up (the first runs allocate and pick kernels)
        for _ in range(2):
            s.run(None, feed)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            w, c, c_start = [], [], cpu_clock()
            while len(w) < 3 or cpu_clock() - c_start < block_s:
                t0, c0 = time.perf_counter(), cpu_clock()
                sess[n].run(None, feed)
                w.append((time.perf_counter() - t0) * 1e3)
                c.append((cpu_clock() - c0) * 1e3)
            wall[n].append(statistics.median(w))
            cpu[n].append(statistics.median(c))

    def speedup(t: dict[str, list[float]], n: str) -> float:
        return statistics.median(b / v for b, v in zip(t[names[0]], t[n], strict=True))

    return {n: {"cpu_ms": statistics.median(cpu[n]), "wall_ms": statistics.median(wall[n]),
                "speedup": speedup(cpu, n), "speedup_wall": speedup(wall, n)} for n in names}


def _onnx_path(folder: Path, name: str) -> Path:
    return folder / f"{name.replace(' ', '_').replace('/', '_')}.onnx"


# ---------------------------------------------------------------- one model
def bench_model(spec: str, variants: dict[str, dict], args: argparse.Namespace, tmp: Path) -> list[dict]:
    sub = tmp / spec.replace(":", "_")
    sub.mkdir(parents=True, exist_ok=True)
    x = torch.randn(1, 3, args.size, args.size)
    if args.phase == "time":  # the versions `--phase prune` exported
        info = json.loads((sub / "info.json").read_text())
        return time_versions(spec, {n: None for n, i in info.items() if "error" not in i}, info, x, args, sub)
    info, models = prune_versions(spec, variants, args, x)
    for name, m in list(models.items()):
        try:
            export_onnx(m, _onnx_path(sub, name), x, check=False)
        except Exception as e:  # noqa: BLE001 - a benchmark records failures
            info[name] = {"error": f"ONNX export: {type(e).__name__}: {str(e)[:200]}"}
            del models[name]
    (sub / "info.json").write_text(json.dumps(info, indent=1))
    return [] if args.phase == "prune" else time_versions(spec, models, info, x, args, sub)


def prune_versions(spec: str, variants: dict[str, dict], args: argparse.Namespace, x: torch.Tensor
                   ) -> tuple[dict[str, dict], dict[str, nn.Module]]:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = slimkit.create_model(spec, num_classes=1000, **json.loads(args.model_kwargs)).eval()
    base_macs = count_macs(model, x)
    models, info = {"base": model}, {"base": {"MACs": base_macs, "params": count_params(model)}}
    builders = {f"slimkit {v}": (lambda kw=kw: (slimkit.prune(model, x, macs_target=0.5, **kw), None))
                for v, kw in variants.items()}
    if not args.skip_tp:
        builders["torch-pruning"] = lambda: tp_cached(spec, model, x, 0.5 * base_macs)
    for name, build in builders.items():
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pruned, timed = build()
                pruned.eval()
                assert pruned(x).shape == model(x).shape, "wrong output shape"
        except Exception as e:  # noqa: BLE001 - a benchmark records failures
            print(f"{spec} {name}: {type(e).__name__}: {e}", flush=True)
            info[name] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}
            continue
        timed = timed or {"prune_s": round(time.perf_counter() - t0, 2),
                          "prune_cpu_s": round(time.process_time() - c0, 2)}
        info[name] = {"MACs": count_macs(pruned, x), "params": count_params(pruned),
                      "prune_s": timed["prune_s"], "prune_cpu_s": timed["prune_cpu_s"]}
        models[name] = pruned
        print(f"{spec} {name}: pruned in {info[name]['prune_s']} s ({info[name]['prune_cpu_s']} s CPU), "
              f"MACs x{base_macs / info[name]['MACs']:.2f}",
              flush=True)
    return info, models


def time_versions(spec: str, models: dict[str, nn.Module | None], info: dict[str, dict], x: torch.Tensor,
                  args: argparse.Namespace, sub: Path) -> list[dict]:
    base_macs = info["base"]["MACs"]
    timing = {}
    for key, (batch, threads) in SETTINGS.items():
        if key in args.skip_settings:
            continue
        rounds = args.rounds if batch == 1 else max(3, args.rounds // 2)
        timing[key] = interleaved(models, x, batch, threads, sub, rounds, args.block_s * (1 if batch == 1 else 2))
    rows = []
    for name, inf in info.items():
        row = {"model": spec, "method": name, **inf}
        if "error" not in inf:
            row["MACs_red"] = base_macs / inf["MACs"]
            for key, t in timing.items():
                row[f"{key}_ms"] = t[name]["cpu_ms"]
                row[f"{key}_wall_ms"] = t[name]["wall_ms"]
                row[f"speedup_{key}"] = t[name]["speedup"]
                row[f"ratio_{key}"] = t[name]["speedup"] / row["MACs_red"]
                row[f"ratio_wall_{key}"] = t[name]["speedup_wall"] / row["MACs_red"]
        rows.append(row)
    return rows


# ---------------------------------------------------------------- report
def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for method in dict.fromkeys(r["method"] for r in rows if r["method"] != "base"):
        ok = [r for r in rows if r["method"] == method and "error" not in r]
        s = {"model": "**average**", "method": method, "n": len(ok)}
        keys = ("MACs_red", *(f"{p}_{k}" for k in SETTINGS for p in ("speedup", "ratio")), "prune_s", "prune_cpu_s")
        for key in keys:
            vals = [r[key] for r in ok if key in r]
            if vals:
                s[key] = float(np.mean(vals))
                if key.startswith("ratio_"):
                    s[key.replace("ratio_", "min_ratio_")] = float(np.min(vals))
        out.append(s)
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "base"]
    fig, axes = plt.subplots(1, len(SETTINGS), figsize=(6 + 0.6 * len(models), 4.5), sharey=True)
    width = 0.8 / max(1, len(methods))
    for ax, key in zip(np.atleast_1d(axes), SETTINGS, strict=False):
        for i, meth in enumerate(methods):
            vals = [next((r.get(f"ratio_{key}", np.nan) for r in rows if r["model"] == m and r["method"] == meth),
                         np.nan) for m in models]
            ax.bar(np.arange(len(models)) + i * width, vals, width, label=meth)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(0.7, color="r", lw=0.8, ls="--")
        ax.set_xticks(np.arange(len(models)) + 0.4 - width / 2)
        ax.set_xticklabels([m.split(":")[-1] for m in models], rotation=60, ha="right", fontsize=8)
        ax.set_title(f"onnxruntime {key}: speed-up / MACs reduction")
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--variant", action="append", default=[],
                    help="extra slimkit call as NAME=JSON kwargs of slimkit.prune (repeatable); 'default' always runs")
    ap.add_argument("--no-default", action="store_true", help="skip the default slimkit call (only --variant ones)")
    ap.add_argument("--skip-tp", action="store_true")
    ap.add_argument("--skip-settings", nargs="*", default=[], choices=list(SETTINGS))
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds at batch 1 (half as many at batch 32)")
    ap.add_argument("--block-s", type=float, default=0.4, help="seconds per model per round (twice at batch 32)")
    ap.add_argument("--results", default="latency_224")
    ap.add_argument("--phase", choices=("all", "prune", "time"), default="all",
                    help="prune: build and export to --onnx-dir only (run niced); time: time what it exported")
    ap.add_argument("--size", type=int, default=224, help="input size (224: the real resolution)")
    ap.add_argument("--model-kwargs", default="{}", help='JSON for create_model, e.g. \'{"img_size": 64}\'')
    ap.add_argument("--onnx-dir", default=None, help="keep the exported versions here (needed by --phase)")
    args = ap.parse_args()
    variants = {} if args.no_default else {"default": {}}
    for v in args.variant:
        name, _, kw = v.partition("=")
        variants[name] = json.loads(kw or "{}")
    meta = {"args": vars(args), "cpu_capability": cpu_capability(), "channel_multiple": channel_multiple(),
            "cores": os.cpu_count(), "torch": torch.__version__, "slimkit_commit": _commit(),
            "onnxruntime": __import__("onnxruntime").__version__,
            "torch_pruning": __import__("torch_pruning").__version__}
    rows: list[dict] = []
    out = HERE / "results" / f"{args.results}.json"
    if args.phase != "all" and not args.onnx_dir:
        ap.error("--phase prune / time need --onnx-dir (where the pruned versions are kept between the two)")
    with tempfile.TemporaryDirectory() as d:
        for spec in args.models:
            rows += bench_model(spec, variants, args, Path(args.onnx_dir or d))
            if args.phase != "prune":
                out.write_text(json.dumps({**meta, "rows": rows, "summary": summarise(rows)}, indent=1))
    if args.phase == "prune":
        print(f"exported to {args.onnx_dir}; now time them: --phase time")
        return
    cols = ["model", "method", "MACs_red", *(f"{p}_{k}" for k in SETTINGS for p in ("speedup", "ratio")), "prune_s",
            "prune_cpu_s"]
    table = [{c: r.get(c, r.get("error", "") if c == "MACs_red" else "") for c in cols}
             for r in rows if r["method"] != "base"]
    print(markdown_table(table))
    print(markdown_table(summarise(rows)))
    plot(rows, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE).stdout.strip()
    except OSError:
        return ""


if __name__ == "__main__":
    main()
