"""INT8 graph rewrites (`slimkit.quantize.rewrite`): onnxruntime latency of INT8 models quantized with and without
them, against fp32, timed interleaved in one process.

ResNet-20 and MobileNetV2 (`mobilenetv2_100`, small_input) on 28x28 grey images (Fashion-MNIST's shape), random
init (latency only), unpruned and pruned to half the MACs by the default `slimkit.prune` call. Each fp32 model is
quantized (all layers INT8, calibration on random images) with no rewrite, each rewrite alone and all of them; the
five models of one network are timed in one `compare_onnx_latency` call per setting (batch 1 on one thread, batch
32 on all threads). The quoted figure is the CPU time of the work (the machine is shared; see
`compare_onnx_latency`); compare the INT8 / fp32 ratios.

    python benchmarks/int8_rewrites.py --rounds 15
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from slimkit.export import export_onnx
from slimkit.models import create_model
from slimkit.profile import compare_onnx_latency, has_vnni
from slimkit.profile.hardware import cpu_capability
from slimkit.prune import prune
from slimkit.quantize import quantize_int8
from slimkit.report import markdown_table

sys.path.insert(0, str(Path(__file__).parent))
from int8 import node_profile  # noqa: E402  (onnxruntime's per-node profile, a sibling script)

HERE = Path(__file__).parent
CACHE = HERE / "cache" / "int8_rewrites"
MODELS = {"resnet20": {}, "mobilenetv2_100": {"small_input": True}}
ARMS = {"none": (), "global_pool": ("global_pool",), "pad_channels": ("pad_channels",),
        "both": ("global_pool", "pad_channels")}
SETTINGS = ((1, 1), (32, None))  # (batch, threads); None: all threads


def _priority(level: int) -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, 0, level)
    except (PermissionError, OSError):
        pass


def _models(name: str, kwargs: dict[str, Any], shape: tuple[int, ...]) -> dict[str, Path]:
    """{"<variant> fp32": path, "<variant> int8 <arm>": path} for the unpruned and the pruned network."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=shape[0], **kwargs).eval()
    x = torch.randn(1, *shape)
    calib = [torch.randn(16, *shape, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    paths = {}
    for variant in ("unpruned", "pruned"):
        d = CACHE / f"{name}_{variant}"
        fp32 = d / "fp32.onnx"
        if not fp32.is_file():
            d.mkdir(parents=True, exist_ok=True)
            m = model if variant == "unpruned" else prune(model, x, macs_target=0.5)
            export_onnx(m, fp32, x)
        paths[f"{variant} fp32"] = fp32
        for arm, rewrites in ARMS.items():
            p = d / f"int8_{arm}.onnx"
            if not p.is_file():
                res = quantize_int8(fp32, calib, p, rewrites=rewrites, max_float_layers=0)
                (d / f"int8_{arm}.json").write_text(json.dumps(res.settings["rewritten"]))
            paths[f"{variant} int8 {arm}"] = p
    return paths


def profile_rows(name: str, paths: dict[str, Path], shape: tuple[int, ...], runs: int) -> list[dict[str, Any]]:
    """Per model: the sum of its nodes' fastest times (one thread), its first convolution (with the Pad and the
    input's quantize / layout transposes before it: "stem") and the operators after its last convolution before the
    classifier ("pool")."""
    rows = []
    for label, path in paths.items():
        for batch in (1, 32):
            t = {n: (v["op"], v["ms"]) for n, v in node_profile(path, shape, batch, runs).items()}
            names = list(t)
            convs = [i for i, n in enumerate(names) if t[n][0] in ("Conv", "FusedConv", "QLinearConv", "NchwcConv")]
            head = next(i for i, n in enumerate(names) if t[n][0] in ("Gemm", "QGemm", "FusedGemm", "MatMul"))
            stem = sum(t[n][1] for n in names[:convs[0] + 1])
            pool = sum(t[n][1] for n in names[convs[-1] + 1:head] if t[n][0] != "QLinearAdd" and t[n][0] != "Add")
            rows.append({"model": name, "variant": label, "batch": batch, "total_ms": round(sum(v for _, v in
                         t.values()), 4), "stem_ms": round(stem, 4), "pool_ms": round(pool, 4),
                         "stem ops": " ".join(t[n][0] for n in names[:convs[0] + 1]),
                         "pool ops": " ".join(t[n][0] for n in names[convs[-1] + 1:head])})
    return rows


def run(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = []
    prof: list[dict[str, Any]] = []
    shape = (1, 28, 28)
    for name, kwargs in MODELS.items():
        if args.only and name not in args.only:
            continue
        paths = _models(name, kwargs, shape)
        for variant in ("unpruned", "pruned"):
            group = {k: p for k, p in paths.items() if k.startswith(variant + " ")}
            _priority(args.timing_nice)
            lat = {} if args.no_timing else {
                (b, t): compare_onnx_latency(group, shape, batch=b, threads=t, rounds=args.rounds,
                                             block_s=0.3 if b == 1 else 0.0) for b, t in SETTINGS}
            _priority(19)
            for label in group if lat else ():
                row: dict[str, Any] = {"model": name, "variant": variant, "arm": label.split(" ", 1)[1]}
                for (b, t), reps in lat.items():
                    key = f"b{b}" + (f"_t{t}" if t else "")
                    ref = reps[f"{variant} fp32"].cpu_median_ms
                    row[f"{key}_ms"] = round(reps[label].cpu_median_ms, 4)
                    row[f"{key}_wall_ms"] = round(reps[label].median_ms, 4)
                    row[f"{key} int8/fp32"] = round(reps[label].cpu_median_ms / ref, 3)
                rows.append(row)
            print(markdown_table(rows[-len(group):]), flush=True)
            if args.profile:
                prof.extend(profile_rows(name, group, shape, args.profile))
                print(markdown_table(prof[-2 * len(group):]), flush=True)
    return rows, prof


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    p.add_argument("--only", nargs="*", default=None, help="resnet20, mobilenetv2_100")
    p.add_argument("--timing-nice", type=int, default=0, help="niceness while timing (19 on a machine in use)")
    p.add_argument("--profile", type=int, default=0, help="also onnxruntime's per-operator profile, N runs per "
                   "model (one thread): the stem's and the pool's time")
    p.add_argument("--no-timing", action="store_true", help="profile only")
    p.add_argument("--results", default="int8_rewrites")
    args = p.parse_args()
    _priority(19)
    rows, prof = run(args)
    out = {"args": vars(args), "cpu_vnni": has_vnni(), "cpu_capability": cpu_capability(),
           "threads": torch.get_num_threads(), "rows": rows, "profile": prof}
    path = HERE / "results" / f"{args.results}.json"
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
