"""Coverage of the vision-transformer families (issue 18): each pruned to half its MACs as a user would call it.

For every family: a random-init model (10 classes; a zero-initialised linear layer gets random weights, so the
parity check compares outputs that are not all zero) at the input size in `FAMILIES` (64x64 where the family runs
there, else its own size), pruned by
- `default`: `slimkit.prune(model, x, macs_target=0.5)` (the latency-true allocation), and
- `dims`: `slimkit.prune(model, x, macs_target=0.5, dims=...)`, the documented call for transformers
  (heads + neurons + tokens for plain ViTs, whose tokens form one stack, token_method "drop" as it needs no labels;
  heads + neurons for windowed / hierarchical ones, which keep their token grid).
Reported: MACs reduction reached, attention heads kept (modules with an int `num_heads`, Hiera's `heads`), ONNX
parity (onnxruntime against PyTorch), and the batch-1 speed-up: the dense and the pruned ONNX models timed by
onnxruntime on one thread, interleaved (A B A B ..., `--rounds` rounds of 10 runs each; each side's best round
median, since other jobs on a shared machine only ever add time).
Resumable: each (model, mode) row replaces its earlier row in benchmarks/results/vit_coverage.json as it finishes.

    nice -n 19 python benchmarks/vit_coverage.py [--only timm:twins_svt_small ...] [--modes default dims]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import slimkit
from slimkit.graph.layout import head_count_attr
from slimkit.profile import count_macs
from slimkit.report import markdown_table

HERE = Path(__file__).parent
RESULTS = HERE / "results" / "vit_coverage.json"
WINDOWED = ("heads", "neurons")
PLAIN = ("heads", "neurons", "tokens")
# name[@size]: (create_model kwargs, input size, dims of the `dims` mode); the families issue 18 names
FAMILIES = {
    "timm:swin_tiny_patch4_window7_224": ({"img_size": 64}, 64, WINDOWED),
    "timm:swinv2_tiny_window8_256": ({"img_size": 64}, 64, WINDOWED),
    "torchvision:swin_t": ({}, 64, WINDOWED),
    "torchvision:swin_v2_t": ({}, 64, WINDOWED),
    "timm:tiny_vit_5m_224": ({}, 64, WINDOWED),
    "timm:levit_128s": ({"img_size": 64}, 64, WINDOWED),
    "timm:mobilevit_xxs": ({}, 64, WINDOWED),
    "timm:mobilevitv2_050": ({}, 64, WINDOWED),
    "timm:efficientvit_b0": ({}, 64, WINDOWED),
    "timm:efficientvit_m0": ({"img_size": 64}, 64, WINDOWED),
    "timm:efficientvit_m0@224": ({}, 224, WINDOWED),  # as built by default: at 64 its windows pad 4x4 to 7x7
    "timm:davit_tiny": ({}, 64, WINDOWED),
    "timm:twins_svt_small": ({}, 64, WINDOWED),
    "timm:twins_pcpvt_small": ({}, 64, WINDOWED),
    "timm:hiera_tiny_224": ({"img_size": 64}, 64, WINDOWED),
    "timm:sam2_hiera_tiny": ({}, 64, WINDOWED),
    "timm:deit_tiny_patch16_224": ({"img_size": 64}, 64, PLAIN),
    "timm:vit_small_patch16_224": ({"img_size": 64}, 64, PLAIN),
    "t2t_vit_7": ({}, 224, PLAIN),
    "poolformer_s12": ({}, 64, WINDOWED),
}
MODES = ("default", "dims")


def heads(model: torch.nn.Module) -> dict[str, int]:
    return {n: getattr(m, a) for n, m in model.named_modules() if (a := head_count_attr(m)) is not None}


def speedup_b1(dense: str, pruned: str, rounds: int) -> float:
    """Dense / pruned onnxruntime batch-1 median latency on one thread, timed interleaved."""
    import onnxruntime as ort

    def session(path: str):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        return sess, {inp.name: np.random.rand(1, *inp.shape[1:]).astype(np.float32)}

    sides = [session(dense), session(pruned)]
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, (sess, feed) in enumerate(sides):
            sess.run(None, feed)
            t = []
            for _ in range(10):
                t0 = time.perf_counter()
                sess.run(None, feed)
                t.append(time.perf_counter() - t0)
            times[i].append(statistics.median(t))
    return min(times[0]) / min(times[1])  # the least disturbed round of each: load only ever adds time


def measure(name: str, mode: str, rounds: int) -> dict:
    kwargs, size, dims = FAMILIES[name]
    row: dict = {"model": name, "mode": mode, "input": size}
    try:
        torch.manual_seed(0)
        model = slimkit.create_model(name.split("@")[0], num_classes=10, **kwargs).eval()
        with torch.no_grad():  # a zero-initialised classifier (Hiera's) would make every output, and parity, zero
            for m in model.modules():
                if isinstance(m, torch.nn.Linear) and not m.weight.any():
                    torch.nn.init.normal_(m.weight, std=0.02)
        x = torch.randn(1, 3, size, size)
        base = count_macs(model, x)
        extra = {"dims": dims, **({"token_method": "drop"} if "tokens" in dims else {})} if mode == "dims" else {}
        if mode == "dims":
            row["dims"] = "+".join(dims)
        t0 = time.perf_counter()
        pruned = slimkit.prune(model, x, macs_target=0.5, **extra).eval()
        row["prune_s"] = round(time.perf_counter() - t0, 1)
        row["MACs reduction"] = round(base / count_macs(pruned, x), 2)
        before, after = heads(model), heads(pruned)
        row["heads kept"] = f"{sum(after.get(n, h) for n, h in before.items())}/{sum(before.values())}"
        with tempfile.TemporaryDirectory() as d:
            slimkit.export_onnx(model, Path(d) / "dense.onnx", x)
            row["onnx max diff"] = float(slimkit.export_onnx(pruned, Path(d) / "pruned.onnx", x).max_abs_diff)
            row["speedup b1"] = round(speedup_b1(str(Path(d) / "dense.onnx"), str(Path(d) / "pruned.onnx"), rounds),
                                      2)
            row["timing"] = f"best of {rounds} rounds"
        row["status"] = "ok" if row["onnx max diff"] <= 1e-4 and row["MACs reduction"] >= 1.96 else "short"
    except Exception as e:  # noqa: BLE001 - a benchmark records failures
        row["status"] = f"{type(e).__name__}: {str(e)[:200]}"
    return row


def store(row: dict) -> list[dict]:
    """Replace the (model, mode) row in the results file (locked: two sweeps may write at once)."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "vit_coverage.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(RESULTS.read_text())["rows"] if RESULTS.is_file() else []
        rows = [r for r in rows if (r["model"], r.get("mode", "default")) != (row["model"], row["mode"])] + [row]
        rows.sort(key=lambda r: (list(FAMILIES).index(r["model"]) if r["model"] in FAMILIES else len(FAMILIES),
                                 r.get("mode", "")))
        RESULTS.write_text(json.dumps({"rows": rows}, indent=1, default=str))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=list(FAMILIES), help="only these families (default all)")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds per model")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rows: list[dict] = []
    for name in args.only or list(FAMILIES):
        for mode in args.modes:
            row = measure(name, mode, args.rounds)
            print(row, flush=True)
            rows = store(row)
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
