"""INT8 after pruning: accuracy and onnxruntime latency, fp32 vs INT8, timed interleaved in one process.

(a) ResNet-20 and MobileNetV2 (`mobilenetv2_100`, small_input) trained on a class-balanced Fashion-MNIST subset,
    pruned to half the MACs by `slimkit compress`'s defaults, fine-tuned, then `--quantize int8` (the product path:
    calibration on training images, tolerance check on the validation split). Goal: INT8 test accuracy within 0.5
    points of the fp32 pruned model, batch-32 latency at most 0.6x of it. `--compare-kernels` also prunes the same
    baseline as before INT8-aware pruning (`prune.kernels: fp32`), fine-tunes and quantizes it, and times all five
    models interleaved (variants marked "fp32 kernels"). `--sweep` also quantizes the same fp32
    model with other settings (calibration method, activation / weight types, reduce_range, per-tensor weights),
    all layers INT8, to show why the defaults are what they are.
(b) ResNet-50 (torchvision, random init, 224x224, latency only): pruned to half its MACs by the default
    `slimkit.prune` call (also with `kernels="int8"` and the old `allocation="uniform"`), then INT8.
    Goal: at least 3x faster than the fp32 original at batch 1 on one thread and
    at batch 32.

(c) `--sizes 28 56 112`, latency only: the same two architectures (random init), unpruned and pruned to half the
    MACs by the default `slimkit.prune` call, exported at each input size and quantized (all layers INT8), fp32 vs
    INT8 at batch 32 on one thread: where INT8 starts to pay on this CPU.
(d) `--profile` (with (a)): onnxruntime's per-operator profile of the fp32 and INT8 pruned models at batch 32 on
    one thread, convolutions grouped by kind, channels and resolution: where the batch-32 time goes.

All latencies of one table come from one `compare_onnx_latency` call (models timed in turn, round after round)
at normal priority; training and quantization run at the lowest priority (the machine is shared).

    python benchmarks/int8.py --limit 10000 --epochs 4 --finetune-epochs 2 --sweep
    python benchmarks/int8.py --only resnet50
    python benchmarks/int8.py --only resnet20 mobilenetv2_100 --sizes 28 56 112 --no-small
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimkit.data import create_dataset, make_loaders
from slimkit.export import export_onnx, onnx_optimized, onnx_session
from slimkit.jobs.compress import FINETUNE, PRUNE, CompressConfig
from slimkit.jobs.compress import run as compress
from slimkit.models import create_model
from slimkit.profile import channel_multiple, compare_onnx_latency, count_macs, has_vnni
from slimkit.profile.hardware import cpu_capability
from slimkit.prune import prune
from slimkit.quantize import Int8Config, quantize_int8
from slimkit.quantize.data import accuracy, as_batches, onnx_logits
from slimkit.quantize.graph import int8_kernel_misses
from slimkit.report import markdown_table

HERE = Path(__file__).parent
CACHE = HERE / "cache" / "int8"
MODELS = {"resnet20": {}, "mobilenetv2_100": {"small_input": True}}
SWEEP = {  # label -> Int8Config overrides (all layers INT8: max_float_layers=0)
    "u8s8 minmax reduce_range (default)": {},
    "u8s8 minmax full range": {"reduce_range": False},
    "u8u8 minmax": {"weights": "uint8", "reduce_range": False},
    "s8s8 minmax": {"activations": "int8", "reduce_range": False},
    "u8s8 entropy reduce_range": {"calibration_method": "entropy"},
    "u8s8 percentile 99.999 reduce_range": {"calibration_method": "percentile"},
    "u8s8 minmax per-tensor reduce_range": {"per_channel": False},
}


def _priority(level: int) -> None:
    """Training and quantizing at nice 19, timing at 0 (root may lower its niceness again)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, level)
    except (PermissionError, OSError):
        pass


def _test_acc(path: Path, test: Any) -> float:
    return accuracy(onnx_logits(onnx_session(path), test), np.concatenate(test.labels))


def _timing(paths: dict[str, Path], shape: tuple[int, ...], settings: list[tuple[int, int | None]],
            rounds: int) -> dict[str, dict[str, float]]:
    """{model: {"b1_t1_ms": ..., "b32_ms": ..., "b32_wall_ms": ...}} per (batch, threads) setting, interleaved.
    The CPU time of the work is the quoted figure (the machine is shared; see `compare_onnx_latency`); at batch 32
    on both cores it is the CPU time of both, so compare ratios, not absolute values, across settings."""
    _priority(0)
    out: dict[str, dict[str, float]] = {k: {} for k in paths}
    for batch, threads in settings:
        key = f"b{batch}" + (f"_t{threads}" if threads else "")
        lat = compare_onnx_latency(paths, shape, batch=batch, threads=threads, rounds=rounds,
                                   block_s=0.3 if batch == 1 else 0.0)
        for name, rep in lat.items():
            out[name][f"{key}_ms"] = round(rep.cpu_median_ms, 4)
            out[name][f"{key}_wall_ms"] = round(rep.median_ms, 4)
    _priority(19)
    return out


def node_profile(path: Path, shape: tuple[int, ...], batch: int, runs: int) -> dict[str, dict[str, Any]]:
    """onnxruntime's profile of one model on one thread, in graph order: {node: {"op", "ms", "output_shape"}}, each
    node's time its fastest of `runs` runs (the least disturbed on a shared machine)."""
    import onnxruntime as ort

    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads, o.log_severity_level = 1, 1, 3
    o.enable_profiling, o.profile_file_prefix = True, str(path.with_suffix(""))
    sess = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    x = {sess.get_inputs()[0].name: np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)}
    for _ in range(runs + 1):
        sess.run(None, x)
    trace = Path(sess.end_profiling())
    times: dict[str, list[float]] = collections.defaultdict(list)
    out: dict[str, dict[str, Any]] = {}
    for e in json.loads(trace.read_text()):
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"].removesuffix("_kernel_time")
        times[name].append(e["dur"] / 1000)
        out[name] = {"op": e["args"]["op_name"], "output_shape": next(iter(e["args"]["output_type_shape"][0].values()))
                     if e["args"].get("output_type_shape") else None}
    trace.unlink()
    for name, ts in times.items():
        out[name]["ms"] = min(ts[1:] or ts)
    return out


def conv_profile(path: Path, shape: tuple[int, ...], batch: int, runs: int) -> dict[tuple, list[float]]:
    """onnxruntime's profile of one model (1 thread): {(kind, channels, HxW): [count, ms]} over its convolutions
    (fp32 Conv or QLinearConv, keyed by output shape; kind "dw" for depthwise) and {("other", op): ...} for the
    rest (`node_profile`)."""
    import onnx

    opt = onnx.load(str(onnx_optimized(path, path.with_suffix(".opt.onnx"))))
    groups = {n.name: next((a.i for a in n.attribute if a.name == "group"), 1) for n in opt.graph.node}
    out: dict[tuple, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for name, node in node_profile(path, shape, batch, runs).items():
        op, dims = node["op"], node["output_shape"]
        if op in ("Conv", "QLinearConv", "FusedConv"):
            c, hw = (dims[3], dims[1:3]) if op == "QLinearConv" else (dims[1], dims[2:4])  # NHWC vs NCHW
            key = ("dw" if groups.get(name, 1) > 1 else "conv", c, "x".join(map(str, hw)))
        else:
            key = ("other", op, "")
        out[key][0] += 1
        out[key][1] += node["ms"]
    return dict(out)


def profile_rows(model: str, fp32: Path, int8: Path, shape: tuple[int, ...], batch: int = 32) -> list[dict]:
    """Where the time goes: fp32 vs INT8 per group of like convolutions (and the other operators)."""
    a, b = conv_profile(fp32, shape, batch, 10), conv_profile(int8, shape, batch, 10)
    convs = sorted({k for k in a | b if k[0] != "other"}, key=lambda k: (k[0], -int(k[2].split("x")[0]), k[1]))
    rows = [{"model": model, "layers": f"{k[0]} {k[1]} ch @{k[2]}", "count": int((a.get(k) or b[k])[0]),
             "fp32_ms": round(a.get(k, [0, 0.0])[1], 3), "int8_ms": round(b.get(k, [0, 0.0])[1], 3)} for k in convs]
    rows.append({"model": model, "layers": "other operators", "count": int(sum(v[0] for k, v in b.items()
                                                                              if k[0] == "other")),
                 "fp32_ms": round(sum(v[1] for k, v in a.items() if k[0] == "other"), 3),
                 "int8_ms": round(sum(v[1] for k, v in b.items() if k[0] == "other"), 3),
                 "int8 ops": ", ".join(f"{k[1]} {v[1]:.2f}" for k, v in b.items() if k[0] == "other")})
    rows.append({"model": model, "layers": "total", "fp32_ms": round(sum(r["fp32_ms"] for r in rows), 3),
                 "int8_ms": round(sum(r["int8_ms"] for r in rows), 3)})
    for r in rows:
        r["int8 / fp32"] = round(r["int8_ms"] / r["fp32_ms"], 3) if r["fp32_ms"] else None
    return rows


def size_sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name, kwargs in MODELS.items():
        if args.only and name not in args.only:
            continue
        torch.manual_seed(0)
        model = create_model(name, num_classes=10, in_chans=1, **kwargs).eval()
        variants = {"unpruned": model, "pruned": prune(model, torch.randn(1, 1, 28, 28), macs_target=0.5)}
        for size in args.sizes:
            x, paths, info = torch.randn(1, 1, size, size), {}, {}
            for label, m in variants.items():
                d = CACHE / "sizes" / f"{name}_{label}_{size}"
                fp32, int8 = d / "fp32.onnx", d / "int8.onnx"
                if not int8.is_file():
                    d.mkdir(parents=True, exist_ok=True)
                    export_onnx(m, fp32, x)
                    calib = [torch.randn(16, 1, size, size, generator=torch.Generator().manual_seed(i))
                             for i in range(2)]
                    quantize_int8(fp32, calib, int8)
                import onnx

                info[label] = (count_macs(m, x), len(int8_kernel_misses(onnx.load(str(int8)))))
                paths[f"fp32 {label}"], paths[f"int8 {label}"] = fp32, int8
            lat = _timing(paths, (1, size, size), [(32, 1)], args.rounds)
            for label, (macs, misses) in info.items():
                f, q = lat[f"fp32 {label}"]["b32_t1_ms"], lat[f"int8 {label}"]["b32_t1_ms"]
                rows.append({"model": name, "input": f"{size}x{size}", "variant": label, "MACs_M": round(macs / 1e6, 1),
                             "fp32_b32_t1_ms": f, "int8_b32_t1_ms": q, "int8 / fp32": round(q / f, 3),
                             "slow int8 convs": misses})
    return rows


def small_models(args: argparse.Namespace, profile: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of part (a); with `args.profile`, part (d)'s rows are appended to `profile`."""

    splits = create_dataset("fashion-mnist", None, seed=0, val_fraction=0.1, limit=args.limit, augment=False)
    test = as_batches(make_loaders(splits, 256).test, None, "test")
    calib = list(itertools.islice(make_loaders(splits, 64, seed=0).train, 8))
    rows = []
    for name, kwargs in MODELS.items():
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            rows.extend(_small_model(args, name, kwargs, seed, test, calib, splits, profile))
    return rows


def _small_model(args: argparse.Namespace, name: str, kwargs: dict[str, Any], seed: int, test: Any, calib: list,
                 splits: Any, profile: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Part (a) for one net and one job seed (data split, baseline, pruning, fine-tuning; the test set is fixed)."""
    import onnx

    rows: list[dict[str, Any]] = []
    out = CACHE / (f"{name}_{args.limit}_{args.epochs}+{args.finetune_epochs}ep" + (f"_s{seed}" if seed else "")
                   + (f"_{args.tag}" if args.tag else ""))
    if args.round_to is not None:  # the same trained baseline, pruned in other channel blocks
        out, base = out.with_name(f"{out.name}_r{args.round_to}"), out / "baseline"
        if (base / "summary.json").is_file() and not (out / "baseline").is_dir():
            shutil.copytree(base, out / "baseline")
    t0 = time.perf_counter()
    paths, accs, arms, float_layers = {}, {}, {}, {}
    first = None  # the first arm's folder: it trains the baseline the others copy
    for kernels in args.arms:  # None: compress's default; the others prune.kernels (labels "... <k> kernels")
        arm = f" {kernels} kernels" if kernels else ""
        d = out.with_name(out.name + arm.replace(" ", "_"))
        first = first or d
        if d != first and (first / "baseline" / "summary.json").is_file() and not (d / "baseline").is_dir():
            shutil.copytree(first / "baseline", d / "baseline")  # the same trained baseline
        cfg = CompressConfig(model=name, data="fashion-mnist", model_kwargs=kwargs, limit=args.limit,
                             baseline_epochs=args.epochs, seed=seed, quantize="int8", out=str(d),
                             latency_batches=tuple(args.job_batches),
                             prune=replace(PRUNE, round_to=args.round_to, kernels=kernels),
                             finetune=replace(FINETUNE, epochs=args.finetune_epochs) if args.finetune_epochs
                             else None)
        s = compress(cfg, resume=True)
        fp32, q8 = d / "model.onnx", d / "model.int8.onnx"
        if "fp32 unpruned" not in paths:
            base_onnx = first / "baseline.onnx"
            if not base_onnx.is_file():
                from slimkit.jobs._common import load_run_model

                export_onnx(load_run_model(first / "baseline")[0], base_onnx, torch.randn(1, 1, 28, 28))
            paths["fp32 unpruned"], accs["fp32 unpruned"] = base_onnx, s["baseline"]["test_acc"]
        for label, p, acc in ((f"fp32 pruned{arm}", fp32, s["int8"]["fp32"]["test_acc"]),
                              (f"int8 pruned{arm}", q8, s["int8"]["int8"]["test_acc"])):  # the same 10,000 images
            paths[label], accs[label], arms[label] = p, acc, f"fp32 pruned{arm}"
        float_layers[f"int8 pruned{arm}"] = (s["int8"], len(int8_kernel_misses(onnx.load(str(q8)))))
        if args.profile:
            _priority(0)
            profile.extend(profile_rows(name + arm, fp32, q8, (1, 28, 28)))
            _priority(19)
    if args.sweep:
        for label, over in SWEEP.items():
            p = out / "sweep" / (label.split(" (")[0].replace(" ", "_") + ".onnx")
            if not p.is_file():
                quantize_int8(fp32, calib, p, config=Int8Config(**over))
            paths[f"int8 {label}"] = p
            accs[f"int8 {label}"] = _test_acc(p, test)
    if args.criteria:
        held = make_loaders(splits, 250).val
        for crit in ("isolated", "all_but_one"):
            c0 = time.perf_counter()
            r = quantize_int8(fp32, calib, out / "criteria" / f"{crit}.onnx", eval_data=held, tolerance=0.0,
                              max_float_layers=args.criteria, sensitivity=crit)
            rows.append({"model": name, "variant": f"sensitivity {crit}", "steps": [
                {"float": [p.split("/")[-2] for p in st.float_layers], "held_out_acc": round(st.acc, 4),
                 "logit_error": round(st.error, 5)} for st in r.steps],
                "held_out_fp32": r.held_out["fp32_acc"], "quantizations": r.settings["quantizations"],
                "seconds": round(time.perf_counter() - c0, 1), "test_acc": round(_test_acc(r.int8_path, test), 4)})
    lat = _timing(paths, (1, 28, 28), [(1, 1), (1, None), (32, 1), (32, None)], args.rounds)
    for label, p in paths.items():
        ref, old = lat[arms.get(label, next(iter(arms.values())))], lat.get("fp32 pruned fp32 kernels")
        rows.append({"model": name, "seed": seed, "variant": label, "test_acc": round(accs[label], 4),
                     "size_kB": round(p.stat().st_size / 1024, 1), **lat[label],
                     **{f"{k.removesuffix('_ms')} / fp32 pruned": round(v / ref[k], 3)
                        for k, v in lat[label].items() if "wall" not in k},
                     **({f"{k.removesuffix('_ms')} / fp32 pruned fp32 kernels": round(v / old[k], 3)
                         for k, v in lat[label].items() if "wall" not in k} if old else {})})
        if label in float_layers:
            int8, misses = float_layers[label]
            rows[-1]["float_layers"] = ", ".join(f["module"] for f in int8["float_layers"]) or "none"
            rows[-1]["held_out"], rows[-1]["slow int8 convs"] = int8.get("held_out"), misses
    rows[-1]["compress_s"] = round(time.perf_counter() - t0, 1)
    partial = HERE / "results" / f"{args.results}.partial.jsonl"  # each (net, seed) as it finishes
    with partial.open("a") as f:
        f.write(json.dumps(rows, default=str) + "\n")
    return rows


def seed_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, variant): the mean and sample std over seeds of the test accuracy and the latency ratios."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for r in rows:
        if "seed" in r:
            groups[r["model"], r["variant"]].append(r)
    out = []
    for (model, variant), rs in groups.items():
        row: dict[str, Any] = {"model": model, "variant": variant, "seeds": [r["seed"] for r in rs]}
        for k in ["test_acc"] + [k for k in rs[0] if " / fp32 pruned" in k]:
            v = np.array([r[k] for r in rs if k in r], dtype=float)
            row[k], row[f"{k} std"] = round(float(v.mean()), 4), round(float(v.std(ddof=1)), 4) if len(v) > 1 else None
        out.append(row)
    return out


R50_PRUNE = {"pruned": {}, "pruned kernels=int8": {"kernels": "int8"},
             "pruned uniform": {"allocation": "uniform"}}
# label -> slimkit.prune arguments: the default (latency allocation), INT8-aware, the old default (uniform)


def resnet50(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = CACHE / "resnet50_224"
    out.mkdir(parents=True, exist_ok=True)
    shape = (3, 224, 224)
    torch.manual_seed(0)
    model = create_model("torchvision:resnet50", num_classes=1000, in_chans=3).eval()
    x = torch.randn(1, *shape)
    paths = {"fp32 original": out / "original.onnx"}
    if not paths["fp32 original"].is_file():
        export_onnx(model, paths["fp32 original"], x)
    info_path = out / "macs.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {"original": count_macs(model, x)}
    for label, kw in R50_PRUNE.items():
        p = out / f"{label.replace(' ', '_').replace('=', '-')}.onnx"
        if not p.is_file():
            c0 = time.process_time()
            small = prune(model, x, macs_target=0.5, **kw)
            export_onnx(small, p, x)
            info[label] = count_macs(small, x)
            info[f"{label} prune_cpu_s"] = round(time.process_time() - c0, 1)
            info_path.write_text(json.dumps(info))
        paths[f"fp32 {label}"] = p
    calib = [torch.randn(16, *shape, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    for name in [k for k in paths if k.startswith("fp32")]:
        p = paths[name].with_suffix(".int8.onnx")
        if not p.is_file():
            quantize_int8(paths[name], calib, p)
        paths[name.replace("fp32", "int8")] = p
    lat = _timing(paths, shape, [(1, 1), (32, None)], max(3, args.rounds // 3))
    ref = lat["fp32 original"]
    return [{"model": "torchvision:resnet50 @224", "variant": k,
             "MACs_G": round(info[k.split(" ", 1)[1]] / 1e9, 3), "size_MB": round(p.stat().st_size / 2**20, 1),
             **lat[k], **{f"speed-up {kk.removesuffix('_ms')}": round(ref[kk] / v, 2) for kk, v in lat[k].items()
                          if "wall" not in kk}}
            for k, p in paths.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=10000, help="class-balanced Fashion-MNIST training subset")
    p.add_argument("--epochs", type=int, default=4, help="baseline training epochs")
    p.add_argument("--finetune-epochs", type=int, default=2)
    p.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    p.add_argument("--sweep", action="store_true", help="also quantize with other settings (all layers INT8)")
    p.add_argument("--criteria", type=int, default=0, help="compare the sensitivity criteria, keeping up to N "
                   "layers float with tolerance 0 (held-out accuracy after each step)")
    p.add_argument("--only", nargs="*", default=None, help="resnet20, mobilenetv2_100, resnet50")
    p.add_argument("--sizes", nargs="*", type=int, default=[], help="(c): input sizes of the latency sweep")
    p.add_argument("--profile", action="store_true", help="(d): per-operator profile of the small models")
    p.add_argument("--compare-kernels", action="store_true", help="(a) also the same baseline pruned as before "
                   "INT8-aware pruning (prune.kernels fp32), timed interleaved with the default")
    p.add_argument("--arms", nargs="*", default=None, choices=["default", "fp32", "int8", "auto"],
                   help="(a) the prune.kernels of each compress of the same baseline (default: compress's own "
                   "choice; --compare-kernels is 'default fp32'), timed interleaved")
    p.add_argument("--no-small", action="store_true", help="skip (a) (e.g. to run only the size sweep)")
    p.add_argument("--round-to", type=int, default=None, help="(a) pruned in channel blocks of N (the baseline of "
                   "the default run is reused); results under key small_r<N>")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="(a) job seeds (data split, baseline, "
                   "pruning, fine-tuning); with several, the means over seeds are under key small_mean")
    p.add_argument("--job-batches", nargs="+", type=int, default=[1, 32], help="(a) the batch sizes compress "
                   "itself times (the table's latencies are this script's interleaved timing)")
    p.add_argument("--tag", default="", help="(a) a suffix of the cache folders (e.g. avx2 for a run with "
                   "ATEN_CPU_CAPABILITY=avx2, which prunes to 8-channel blocks as on an AVX2 CPU)")
    p.add_argument("--results", default="int8")
    args = p.parse_args()
    args.arms = [None if k == "default" else k for k in args.arms or ["default"] + ["fp32"] * args.compare_kernels]
    _priority(19)
    new: dict[str, Any] = {}  # this run's parts; the file keeps the parts not rerun
    small = not args.no_small and (not args.only or set(args.only) & set(MODELS))
    if small or (not args.no_small and (not args.only or "resnet50" in args.only)):
        new.update({"args" if args.round_to is None else f"args_r{args.round_to}": vars(args),
                    "cpu_vnni": has_vnni(), "threads": torch.get_num_threads(),
                    "cpu_capability": cpu_capability(), "channel_multiple": channel_multiple()})
    if small:
        profile: list[dict[str, Any]] = []
        key = "small" if args.round_to is None else f"small_r{args.round_to}"
        new[key] = small_models(args, profile)
        print(markdown_table(new[key]))
        if len(args.seeds) > 1:
            new[key + "_mean"] = seed_means(new[key])
            print(markdown_table(new[key + "_mean"]))
        if profile:
            new[key.replace("small", "profile")] = profile
            print(markdown_table(profile))
    if args.sizes:
        new["sizes"], new["sizes_args"] = size_sweep(args), vars(args)
        print(markdown_table(new["sizes"]))
    if not args.no_small and (not args.only or "resnet50" in args.only):
        new["resnet50"] = resnet50(args)
        print(markdown_table(new["resnet50"]))
    path = HERE / "results" / f"{args.results}.json"
    res = json.loads(path.read_text()) if path.is_file() else {}  # read now: another part may have finished
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**res, **new}, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
