"""Own weights at real resolution, end to end as a user would: a timm model trained on an image folder at
`--input-size`, its weights saved the way training scripts save them, then `slimkit compress --model timm:...
--weights ... --quantize int8` on the same folder, and the original, pruned and INT8 ONNX models timed interleaved.

Steps (each one a `slimkit` command run at the lowest priority, skipped when its output exists):
1. `benchmarks/make_image_folder.py`: a class-balanced Fashion-MNIST subset written as a PNG tree (train/, test/).
2. `slimkit train --model timm:resnet18 --data FOLDER --input-size 3,96,96`: random-resized-crop + flip, grey
   repeated to RGB, timm's own normalisation; images decoded by worker processes.
3. The trained weights re-saved as a PyTorch checkpoint in a DDP wrapper (`{"model": {"module.<key>": ...}}`),
   the layout a user's own training script typically leaves.
4. `slimkit compress --model timm:resnet18 --weights my_resnet18.pth --data FOLDER --input-size 3,96,96
   --quantize int8` (the product's defaults otherwise: half the MACs, fine-tuning, ONNX export, INT8 with
   sensitivity-guided float layers).
5. `slimkit export --model timm:resnet18 --weights my_resnet18.pth --input-size 3,96,96`: the original as ONNX.
Then, at normal priority, onnxruntime latency of original fp32 / pruned fp32 / pruned INT8 timed interleaved in one
process (`compare_onnx_latency`): batch 1 on one thread and batch 32 on all threads; the CPU time of the work is
the quoted figure (the machine may be shared), wall clock kept in the JSON.

    python benchmarks/own_weights.py --limit 2000 --test-limit 1000 --epochs 10 --finetune-epochs 3 \
        --results own_weights_10ep
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from slimkit.profile import compare_onnx_latency, has_vnni
from slimkit.report import markdown_table

HERE = Path(__file__).parent
ROOT = HERE.parent


def _slimkit(*args: str, log: Path) -> float:
    """Run one `slimkit` command at the lowest priority (its output to `log`); returns its wall time in seconds."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = ["nice", "-n", "19", sys.executable, "-m", "slimkit.cli.main", *args]
    print("$ slimkit " + " ".join(args), flush=True)
    t0 = time.perf_counter()
    with log.open("w") as f:
        code = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if code != 0:
        sys.exit(f"`slimkit {args[0]}` failed (exit {code}); see {log}")
    return time.perf_counter() - t0


def _user_checkpoint(src: Path, dst: Path) -> None:
    """The trained weights as a DDP-wrapped PyTorch checkpoint with training state beside them (a typical user
    file: slimkit must find the weights inside and read it with weights_only=True)."""
    sd = load_file(str(src))
    torch.save({"epoch": 3, "model": {f"module.{k}": v for k, v in sd.items()}, "note": "trained elsewhere"}, dst)


def _timing(paths: dict[str, Path], shape: tuple[int, ...], rounds: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {k: {} for k in paths}
    for batch, threads in ((1, 1), (32, None)):
        lat = compare_onnx_latency(paths, shape, batch=batch, threads=threads, rounds=rounds,
                                   block_s=0.3 if batch == 1 else 0.0)
        for name, rep in lat.items():
            out[name][f"b{batch}_ms"] = round(rep.cpu_median_ms, 3)
            out[name][f"b{batch}_wall_ms"] = round(rep.median_ms, 3)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="timm:resnet18")
    p.add_argument("--input-size", type=int, default=96)
    p.add_argument("--limit", type=int, default=3000, help="class-balanced Fashion-MNIST training images")
    p.add_argument("--test-limit", type=int, default=1000, help="class-balanced test images")
    p.add_argument("--epochs", type=int, default=3, help="training epochs of the user's model")
    p.add_argument("--finetune-epochs", type=int, default=1, help="compress's fine-tuning epochs")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=10, help="interleaved timing rounds")
    p.add_argument("--work", default=str(HERE / "cache" / "own_weights"), help="folder for the runs")
    p.add_argument("--results", default="own_weights")
    args = p.parse_args()
    s = args.input_size
    size = f"3,{s},{s}"
    work = Path(args.work) / f"{args.model.replace(':', '_')}_{s}_{args.limit}_{args.epochs}+{args.finetune_epochs}ep"
    work.mkdir(parents=True, exist_ok=True)
    folder = Path(args.work) / f"fashion-mnist_{args.limit}_{args.test_limit}"
    seconds: dict[str, float] = {}
    if not (folder / "test").is_dir():
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        subprocess.check_call(["nice", "-n", "19", sys.executable, str(HERE / "make_image_folder.py"),
                               "--data", "fashion-mnist", "--out", str(folder), "--limit", str(args.limit),
                               "--test-limit", str(args.test_limit)], env=env)
    train_dir, comp_dir = work / "train", work / "compress"
    if not (train_dir / "summary.json").is_file():
        resume = ["--resume"] if (train_dir / "config.yaml").is_file() else []
        seconds["train"] = _slimkit("train", "--model", args.model, "--data", str(folder), "--input-size", size,
                                    "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
                                    "--out", str(train_dir), *resume, log=work / "train.log")
    weights = work / f"my_{args.model.split(':')[-1]}.pth"
    if not weights.is_file():
        _user_checkpoint(train_dir / "model.safetensors", weights)
    if not (comp_dir / "report.json").is_file() or "int8" not in json.loads((comp_dir / "report.json").read_text()):
        resume = ["--resume"] if (comp_dir / "config.yaml").is_file() else []
        seconds["compress"] = _slimkit("compress", "--model", args.model, "--weights", str(weights), "--data",
                                       str(folder), "--input-size", size, "--finetune-epochs",
                                       str(args.finetune_epochs), "--quantize", "int8", "--out", str(comp_dir),
                                       *resume,
                                       log=work / "compress.log")
    original = work / "original.onnx"
    if not original.is_file():
        seconds["export"] = _slimkit("export", "--model", args.model, "--weights", str(weights), "--input-size",
                                     size, "--out", str(original), log=work / "export.log")
    trained = json.loads((train_dir / "summary.json").read_text())
    rep = json.loads((comp_dir / "report.json").read_text())
    b, pr, q = rep["baseline"], rep["pruned"], rep["int8"]
    paths = {"original fp32": original, "pruned fp32": comp_dir / "model.onnx",
             "pruned INT8": comp_dir / "model.int8.onnx"}
    lat = _timing(paths, (3, s, s), args.rounds)
    acc = {"original fp32": b["test_acc"], "pruned fp32": q["fp32"]["test_acc"], "pruned INT8": q["int8"]["test_acc"]}
    macs = {"original fp32": b["macs"], "pruned fp32": pr["macs"], "pruned INT8": pr["macs"]}
    ref = lat["original fp32"]
    rows = [{"model": f"{args.model} @{s}", "variant": k, "test_acc": round(acc[k], 4),
             "MACs_M": round(macs[k] / 1e6, 1), "onnx_MB": round(path.stat().st_size / 2**20, 2),
             "b1_ms": lat[k]["b1_ms"], "b32_ms": lat[k]["b32_ms"],
             "speed-up b1": round(ref["b1_ms"] / lat[k]["b1_ms"], 2),
             "speed-up b32": round(ref["b32_ms"] / lat[k]["b32_ms"], 2)} for k, path in paths.items()]
    res: dict[str, Any] = {
        "args": vars(args), "cpu_vnni": has_vnni(), "threads": torch.get_num_threads(), "rows": rows, "latency": lat,
        "train": {k: trained.get(k) for k in ("test_acc", "epochs", "input_size", "norm", "view", "workers",
                                             "channels", "train_time_s")},
        "compress": {"baseline_source": rep.get("baseline_source"), "budget": rep.get("budget"),
                     "macs_reduction": rep["macs_reduction"], "params_reduction": rep["params_reduction"],
                     "acc_after_prune_before_finetune": rep.get("acc_after_prune_before_finetune"),
                     "float_layers": [f["module"] for f in q["float_layers"]], "held_out": q.get("held_out"),
                     "int8_acc_change_points": q["acc_change_points"]},
        "weights_file": {"path": weights.name, "MB": round(weights.stat().st_size / 2**20, 2)},
        "step_seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    print(markdown_table(rows))
    out = HERE / "results" / f"{args.results}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
