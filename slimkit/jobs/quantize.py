"""`slimkit quantize` and compress's INT8 stage: fp32 ONNX -> INT8 ONNX calibrated on training images, with
fp32 vs INT8 test accuracy, onnxruntime latency (timed interleaved) and file size side by side.

The source is a run folder of `slimkit train` / `distill` (its model is exported first), of `slimkit compress`
(its `model.onnx`), or an fp32 `.onnx` file with `--data`. Results: `model.int8.onnx`, `int8.json`, `int8.html` in the
run folder (for an .onnx file: in a `<name>-int8/` folder beside it).
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset

from slimkit.config import load_yaml
from slimkit.data import DataSplits
from slimkit.errors import ConfigError
from slimkit.export import export_onnx, onnx_session
from slimkit.fileio import file_sha256
from slimkit.jobs._common import build_data, load_run_model, read_model_spec, write_config, write_json
from slimkit.profile import compare_onnx_latency, has_vnni
from slimkit.quantize import Int8Config, QuantizeResult, ort_quantization, quantize_int8, resolve_reduce_range
from slimkit.quantize.data import accuracy, as_batches, onnx_logits
from slimkit.quantize.graph import int8_kernel_misses
from slimkit.report import write_html

__all__ = ["QuantizeJobConfig", "held_out_pool", "int8_stage", "int8_rows", "int8_kernels", "int8_verdict",
           "int8_deploy", "deploy_note", "run"]

INT8_ONNX = "model.int8.onnx"
INT8_JSON = "int8.json"


@dataclass(frozen=True)
class QuantizeJobConfig:
    source: str = ""  # run folder (train / distill / compress) or fp32 .onnx file
    data: str | None = None  # dataset, .npz or image folder (default: the run's own)
    data_root: str | None = None
    limit: int | None = None  # class-balanced subset of training images (as the run used)
    val_fraction: float = 0.1  # held-out share of training images (the tolerance check uses it)
    seed: int | None = None  # the split of train / validation images (default: the run's own seed, else 0)
    input_size: tuple[int, ...] | None = None  # an .onnx file's input: SIZE, (H, W) or (C, H, W) (a run: its own)
    batch_size: int = 64
    latency_batches: tuple[int, ...] = (1, 32)  # onnxruntime batch sizes timed for fp32 vs INT8
    int8: Int8Config = field(default_factory=Int8Config)
    out: str | None = None  # folder for model.int8.onnx, int8.json, int8.html (default: the source's folder)


def _source(cfg: QuantizeJobConfig, out: Path) -> tuple[Path, str, str | None, int | None, int, dict | None]:
    """(fp32 ONNX, data, data_root, limit, seed, the run's model spec or None) for the source: an .onnx file, or a
    run folder whose `model.onnx` is used when it is newer than its weights (else the run's model is exported to
    `out`)."""
    src = Path(cfg.source)
    if src.is_file() and src.suffix == ".onnx":
        if not cfg.data:
            raise ConfigError(f"quantizing {src.name} needs images to calibrate on and test with: pass --data "
                              "(the data the model was trained on, e.g. --data fashion-mnist)")
        return src, cfg.data, cfg.data_root, cfg.limit, cfg.seed or 0, None
    if not src.is_dir():
        raise ConfigError(f"{cfg.source!r} is neither an .onnx file nor a run folder: pass the --out folder of "
                          "`slimkit train` / `distill` / `compress`, or an fp32 .onnx file with --data")
    run_cfg = load_yaml(src / "config.yaml") if (src / "config.yaml").is_file() else {}
    spec = read_model_spec(src)
    onnx, weights = src / "model.onnx", src / "model.safetensors"
    if onnx.is_file() and weights.is_file() and onnx.stat().st_mtime >= weights.stat().st_mtime:
        fp32 = onnx
    else:
        model, _ = load_run_model(src)
        fp32 = out / "model.onnx"
        export_onnx(model, fp32, torch.randn(1, *spec["input_size"]))
    limit = cfg.limit if cfg.limit is not None else run_cfg.get("limit")
    seed = cfg.seed if cfg.seed is not None else run_cfg.get("seed", (run_cfg.get("train") or {}).get("seed", 0))
    data, root = cfg.data or spec.get("data") or "digits", cfg.data_root or spec.get("data_root")
    return fp32, data, root, limit, int(seed), spec


def _check_shape(fp32: Path, splits: DataSplits) -> None:
    dims = onnx_session(fp32).get_inputs()[0].shape
    want = [splits.info.in_chans, *splits.info.image_size]
    if len(dims) == 4 and all(isinstance(d, int) for d in dims[1:]) and list(dims[1:]) != want:
        raise ConfigError(f"{fp32.name} takes inputs of {list(dims[1:])} but the data gives {want}: quantize with "
                          "the data the model was trained on")


def int8_kernels(res: QuantizeResult) -> dict[str, Any]:
    """What onnxruntime runs for an INT8 model: the convolutions its fast INT8 kernels do not take (and why), and,
    from its optimised graph (read once, by `quantize_int8`), the float <-> int8 conversions left and the
    dequantize -> quantize round trips."""
    import onnx

    misses = int8_kernel_misses(onnx.load(str(res.int8_path)))
    return {"slow_convs": [{"layer": m.layer.module, "node": m.layer.node, "reason": m.reason} for m in misses],
            **res.runtime, "vnni": has_vnni()}


def held_out_pool(splits: DataSplits, images: int) -> tuple[Dataset, str]:
    """The images the INT8 tolerance check uses: the validation split, topped up to `images` with training images
    outside the `limit` subset (`DataSplits.spare`, never trained on), and what they are, said in words."""
    val, spare = len(splits.val), len(splits.spare) if splits.spare is not None else 0
    extra = min(spare, max(0, images - val))
    if not extra:
        return splits.val, f"{min(images, val)} held-out images (validation split)"
    pool = ConcatDataset([splits.val, Subset(splits.spare, range(extra))])
    return pool, (f"{val + extra} held-out images ({val} validation + {extra} training images outside --limit, "
                  "never trained on)")


def int8_stage(fp32: Path, splits: DataSplits, cfg: Int8Config, out: Path, *, batch_size: int = 64, seed: int = 0,
               latency_batches: tuple[int, ...] = (1, 32), console: Console | None = None) -> dict[str, Any]:
    """Quantize `fp32` (calibrated on training images, checked on held-out ones: `held_out_pool`), then measure fp32 vs
    INT8 on the test set: accuracy, onnxruntime latency interleaved, size. Writes `out/int8.json`."""
    console = console or Console(stderr=True)
    _check_shape(fp32, splits)
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(splits.train, batch_size=batch_size, shuffle=True, generator=g)
    calib = list(itertools.islice(iter(train), -(-cfg.calibration_images // batch_size)))
    pool, where = held_out_pool(splits, cfg.eval_images)
    held = DataLoader(pool, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)) \
        if len(pool) else None  # shuffled: the first eval_images are a random sample of the pool
    console.print(f"INT8: calibrating on {min(cfg.calibration_images, len(splits.train))} training images"
                  + (f", tolerance {cfg.tolerance} points at confidence {cfg.confidence} on {where}"
                     if held is not None else " (no held-out images: no tolerance check)"))
    res = quantize_int8(fp32, calib, out / INT8_ONNX, eval_data=held, config=cfg)
    test = as_batches(DataLoader(splits.test, batch_size=256), None, "test")
    labels = np.concatenate(test.labels)
    rows = {name: {"test_acc": accuracy(onnx_logits(onnx_session(p), test), labels), "size_bytes": size}
            for name, p, size in (("fp32", res.fp32_path, res.fp32_bytes), ("int8", res.int8_path, res.int8_bytes))}
    shape = (splits.info.in_chans, *splits.info.image_size)
    console.print(f"INT8: timing fp32 vs INT8 interleaved (onnxruntime, batch {', '.join(map(str, latency_batches))})")
    for b in latency_batches:
        lat = compare_onnx_latency({"fp32": res.fp32_path, "int8": res.int8_path}, shape, batch=b)
        for name in rows:
            rows[name][f"ort_b{b}_ms"] = lat[name].median_ms
    f, q = rows["fp32"], rows["int8"]
    speedups = {b: f[f"ort_b{b}_ms"] / q[f"ort_b{b}_ms"] for b in latency_batches}
    summary = {
        "deploy": int8_deploy(speedups, str(res.fp32_path), str(res.int8_path)),
        "fp32": f, "int8": q, "fp32_onnx": str(res.fp32_path), "int8_onnx": str(res.int8_path),
        "acc_change_points": 100.0 * (q["test_acc"] - f["test_acc"]),
        **{f"speedup_b{b}": v for b, v in speedups.items()},
        "size_ratio": f["size_bytes"] / q["size_bytes"],
        "int8_layers": len(res.int8_layers),
        "float_layers": [vars(x) for x in res.float_layers],
        "held_out": res.held_out, "settings": res.settings, "seconds": res.seconds,
        "fp32_sha256": file_sha256(fp32), "latency_batches": list(latency_batches),
        "kernels": int8_kernels(res),
        "sensitivity": res.to_dict()["sensitivity"], "steps": [vars(s) for s in res.steps],
    }
    return json.loads(write_json(out / INT8_JSON, summary).read_text())  # as a resumed run reads it back


def load_int8(out: Path, cfg: Int8Config, fp32: Path, latency_batches: tuple[int, ...]) -> dict[str, Any] | None:
    """A finished INT8 stage's summary (for resume) if it quantized this `fp32` file (the same bytes: a resumed run
    that fine-tuned longer exported another model) with the options of `cfg`, timed at `latency_batches`; else
    None."""
    p = out / INT8_JSON
    if not (p.is_file() and (out / INT8_ONNX).is_file() and fp32.is_file()):
        return None
    done = json.loads(p.read_text())
    want = json.loads(json.dumps({**asdict(cfg), "reduce_range": resolve_reduce_range(cfg)}))  # as recorded
    same = all(done.get("settings", {}).get(k) == v for k, v in want.items())
    same = same and done.get("latency_batches") == list(latency_batches)
    return done if same and done.get("fp32_sha256") == file_sha256(fp32) else None


_SLOWER = 0.9  # an INT8 speed-up below this is "slower" (beyond the noise of a shared machine); fp32 is deployed
# when INT8's geometric mean over the measured batch sizes is below it


def int8_deploy(speedups: dict[int, float], fp32_onnx: str = "model.onnx",
                int8_onnx: str = "model.int8.onnx") -> dict[str, Any]:
    """Which model to deploy, from INT8's measured speed-up over fp32 per batch size: INT8 unless it is slower
    (below x0.9) on the geometric mean of the measured batch sizes; then fp32, the faster of the two measured (the
    INT8 file stays beside it). `slower_at`: the batch sizes where INT8 is slower, said plainly either way."""
    mean = math.exp(sum(math.log(v) for v in speedups.values()) / len(speedups)) if speedups else 1.0
    precision = "int8" if mean >= _SLOWER else "fp32"
    return {"precision": precision, "onnx": int8_onnx if precision == "int8" else fp32_onnx,
            "speedup_geomean": mean, "slower_at": sorted(b for b, v in speedups.items() if v < _SLOWER)}


def deploy_note(s: dict[str, Any]) -> str:
    """One plain sentence: the model to deploy and, where INT8 measured slower than fp32, by how much."""
    speed = {int(k.removeprefix("speedup_b")): v for k, v in s.items() if k.startswith("speedup_b")}
    d = s.get("deploy") or int8_deploy(speed, s.get("fp32_onnx", "model.onnx"), s.get("int8_onnx", "model.int8.onnx"))
    fp32, int8 = Path(s.get("fp32_onnx", "model.onnx")).name, Path(s.get("int8_onnx", "model.int8.onnx")).name
    slower = ", ".join(f"batch {b} x{speed[b]:.2f}, {1 / speed[b]:.1f}x slower" for b in d["slower_at"])
    if d["precision"] == "fp32":
        return (f"Deploy {fp32} (fp32), not the INT8 model: INT8 is SLOWER than fp32 here ({slower}; "
                f"x{d['speedup_geomean']:.2f} on the geometric mean of the measured batch sizes). {int8} is kept "
                "beside it for reference.")
    if slower:
        return (f"Deploy {int8} (INT8, x{d['speedup_geomean']:.2f} on the geometric mean of the measured batch "
                f"sizes), but INT8 is SLOWER than fp32 at {slower}: at that batch size deploy {fp32} (fp32).")
    return f"Deploy {int8} (INT8)."


def int8_rows(s: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Report tables: fp32 vs INT8 side by side, and the layers kept in float with why."""
    f, q = s["fp32"], s["int8"]
    side = [{"metric": k, "fp32": f[k], "int8": q[k],
             "fp32 / int8": f[k] / q[k] if q[k] and k != "test_acc" else None} for k in f]
    floats = [{"layer": x["module"], "onnx node": x["node"], "op": x["op_type"], "why": x["reason"],
               "cost if quantized": x["score"]} for x in s["float_layers"]]
    if not floats:
        held = s.get("held_out") or {}
        why = (f"all-INT8 within {held['tolerance_points']} points on the held-out images"
               if held.get("tolerance_met") and held.get("int8_all_acc") == held.get("int8_acc") else "none")
        floats = [{"layer": "(none kept in float)", "why": why}]
    return {"INT8 vs fp32 (onnxruntime)": side, "layers kept in float": floats}


def int8_note(s: dict[str, Any]) -> str:
    held = s.get("held_out")
    check = ""
    if held:
        check = (f"; held-out ({held['images']} images): fp32 {held['fp32_acc']:.4f}, all-INT8 "
                 f"{held['int8_all_acc']:.4f}, final {held['int8_acc']:.4f} ({_tolerance(held)})")
    b = [k for k in s if k.startswith("speedup_b")]
    speed = ", ".join(f"batch {k.removeprefix('speedup_b')} x{s[k]:.2f}" for k in b)
    return " ".join([deploy_note(s), f"INT8: test accuracy {s['fp32']['test_acc']:.4f} -> {s['int8']['test_acc']:.4f} "
                     f"({s['acc_change_points']:+.2f} points), onnxruntime speed-up {speed}, file "
                     f"x{s['size_ratio']:.2f} smaller, {len(s['float_layers'])} layer(s) kept in float{check}.",
                     *_rewritten(s), *_requantized(s), *int8_verdict(s)])


def _tolerance(held: dict[str, Any]) -> str:
    """The tolerance verdict in words: the loss bound at the confidence, and what a failed check means."""
    if "loss_upper_points" not in held:  # an int8.json written before the bound was kept
        return f"tolerance {held['tolerance_points']} points {'met' if held['tolerance_met'] else 'NOT met'}"
    said = (f"{held['lost']} image(s) lost, {held['gained']} gained against fp32: accuracy loss at most "
            f"{held['loss_upper_points']:.2f} points at confidence {held['confidence']}, tolerance "
            f"{held['tolerance_points']}")
    if held["tolerance_met"]:
        return said + " met"
    point = 100.0 * (held["fp32_acc"] - held["int8_acc"])
    if point <= held["tolerance_points"]:
        return (said + f" NOT confirmed: the loss measured is {point:.2f} points, but {held['images']} images "
                "cannot tell it from a larger one; check on more held-out images (--eval-images, a larger "
                "validation split or a --limit that leaves images out) or accept it with --confidence 0.5")
    return said + " NOT met: keep more layers in float (--max-float) or calibrate differently"


_REWRITTEN = {"global_pool": "global average pool(s) (ReduceMean -> GlobalAveragePool, quantized)",
              "pad_channels": "convolution(s) on the input padded with zero channels to a multiple of 4 (fast "
                              "INT8 kernel)"}


def _rewritten(s: dict[str, Any]) -> list[str]:
    """What `slimkit.quantize.rewrite` changed in the fp32 graph before quantizing (nothing said when nothing)."""
    done = {k: v for k, v in (s.get("settings", {}).get("rewritten") or {}).items() if v}
    return [f"Graph rewritten before quantizing (same outputs): "
            f"{', '.join(f'{v} {_REWRITTEN.get(k, k)}' for k, v in done.items())}."] if done else []


def _requantized(s: dict[str, Any]) -> list[str]:
    names = s.get("settings", {}).get("requantized_by_onnxruntime") or []
    return [f"onnxruntime's graph optimiser quantizes {len(names)} layer(s) chosen to stay in float "
            f"({', '.join(names)}; fed straight by a dequantized tensor): they run in INT8 and are counted so."] \
        if names else []


_WORTH = 1.25  # an INT8 speed-up below this is "barely faster": the report says why


def int8_verdict(s: dict[str, Any]) -> list[str]:
    """Plain sentences when INT8 is not (or barely) faster than fp32 at a measured batch size, and why, from what
    `int8_kernels` found in the graph onnxruntime runs. Empty when INT8 is at least x1.25 faster everywhere."""
    speed = {int(k.removeprefix("speedup_b")): v for k, v in s.items() if k.startswith("speedup_b")}
    slow = {b: v for b, v in speed.items() if v < _WORTH}
    if not slow:
        return []
    said = ", ".join(f"batch {b} x{v:.2f}" for b, v in slow.items())
    head = ("INT8 is NOT faster than fp32" if min(slow.values()) < 1.0 else "INT8 is barely faster than fp32") + \
        f" here ({said})."
    k = s.get("kernels")
    if k is None:  # a summary written before the kernels were inspected
        return [head]
    why = []
    if k["slow_convs"]:
        names = ", ".join(f"{m['layer']} ({m['reason']})" for m in k["slow_convs"][:4])
        more = f" and {len(k['slow_convs']) - 4} more" if len(k["slow_convs"]) > 4 else ""
        why.append(f"{len(k['slow_convs'])} of {k['int8_convs']} INT8 convolutions miss onnxruntime's fast INT8 "
                   f"kernels and take its generic path (im2col, int32 result, separate requantization), about as "
                   f"slow as fp32: {names}{more}. Its fast kernels want at least 16 output channels in multiples of "
                   "8, input channels in multiples of 4 and depthwise channels in multiples of 16. Pruning with "
                   "--round-to 16 meets them, but a group of 16 channels then cannot shrink and later layers lose "
                   "more: compare the accuracy.")
    islands = max(0, k["conversions"] - 2) // 2
    if islands:
        why.append(f"onnxruntime's optimised graph still converts between float and INT8 at {islands} more "
                   "place(s) than the input and output (layers kept in float, operators without an INT8 kernel); "
                   "each conversion is a pass over an activation tensor.")
    if k["dq_q_pairs"]:
        why.append(f"{k['dq_q_pairs']} dequantize -> quantize round trip(s) were left unfused.")
    if not k.get("vnni"):
        why.append("This CPU has no VNNI: its INT8 kernels add 8-bit products in 16-bit pairs (vpmaddubsw) and "
                   "gain little over fp32 on small convolutions (few channels, small images); small models also "
                   "pay fixed per-operator costs that INT8 does not cut.")
    if not why:
        why.append("every INT8 convolution takes onnxruntime's fast kernels and no float island is left: the "
                   "model is too small for INT8 arithmetic to outweigh the per-operator costs it does not cut, or "
                   "the measurement was disturbed by other load (measure again on an idle machine).")
    return [f"{head} Why:", *why]


def run(cfg: QuantizeJobConfig, console: Console | None = None) -> dict[str, Any]:
    """Quantize a run folder's model or an ONNX file; writes model.int8.onnx, int8.json and int8.html."""
    console = console or Console(stderr=True)
    if not cfg.source:
        raise ConfigError("give the run folder or .onnx file to quantize (e.g. `slimkit quantize runs/fm`)")
    ort_quantization()  # before a run folder's model is exported
    src = Path(cfg.source)
    out = Path(cfg.out) if cfg.out else (src if src.is_dir() else src.with_name(f"{src.stem}-int8"))
    out.mkdir(parents=True, exist_ok=True)
    fp32, data, root, limit, seed, spec = _source(cfg, out)
    write_config(out / "quantize.yaml", cfg)
    # a run's images are seen as it saw them (its input size, crop and normalisation, recorded in model.json)
    splits = build_data(data, root, seed=seed, val_fraction=cfg.val_fraction, limit=limit, augment=False,
                        input_size=cfg.input_size, like=spec)
    s = int8_stage(fp32, splits, cfg.int8, out, batch_size=cfg.batch_size, seed=seed,
                   latency_batches=cfg.latency_batches, console=console)
    s = {**s, "data": splits.info.name, "source": str(src), "out": str(out)}
    write_json(out / INT8_JSON, s)
    write_html(out / "int8.html", f"slimkit quantize: {src.name} on {splits.info.name}", tables=int8_rows(s),
               notes=[int8_note(s)])
    return s
