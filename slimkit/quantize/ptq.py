"""INT8 post-training static quantization with onnxruntime's tools, with sensitivity-guided mixed precision.

fp32 ONNX -> `quant_pre_process` (shape inference, graph clean-up) -> graph rewrites into operators that run faster
in INT8 (`slimkit.quantize.rewrite`, `Int8Config.rewrites`) -> calibration on training images (activation ranges,
computed once and cached) -> `quantize_static` in QDQ format with per-channel weights. With held-out
labelled images, the INT8 model is compared with fp32; unless its accuracy loss is within `tolerance` points at
`confidence` (the held-out set's sampling error counted), the layers whose quantization costs the most
(`slimkit.quantize.sensitivity`) stay in float, up to `max_float_layers`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import numbers
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import nn

from slimkit.errors import ConfigError, ExportError, MissingDependencyError
from slimkit.export import export_onnx, onnx_optimized, onnx_session
from slimkit.fileio import atomic_write
from slimkit.profile import has_vnni
from slimkit.quantize.data import Batches, accuracy, as_batches, calibration_reader, onnx_logits
from slimkit.quantize.graph import (
    Layer,
    feeding_activations,
    file_bytes,
    int8_layers,
    run_as_int8,
    runtime_summary,
    weighted_layers,
)
from slimkit.quantize.rewrite import apply_rewrites, check_rewrites, input_pads
from slimkit.quantize.sensitivity import (
    CRITERIA,
    LayerScore,
    Step,
    choose_float_layers,
    make_step,
    rank_layers,
    within,
)

__all__ = ["Int8Config", "FloatLayer", "QuantizeResult", "quantize_int8", "resolve_reduce_range",
           "ort_quantization", "resolve_float_layers", "float_layer_nodes"]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
_TYPES = ("uint8", "int8")


@dataclass(frozen=True)
class Int8Config:
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"  # how activation ranges are chosen
    percentile: float = 99.999  # with calibration_method="percentile": the share of values the range covers
    activations: Literal["uint8", "int8"] = "uint8"  # activation type (onnxruntime's x86 kernels are u8 x s8)
    weights: Literal["uint8", "int8"] = "int8"
    per_channel: bool = True  # one scale per output channel of every weight
    reduce_range: bool | Literal["auto"] = "auto"  # 7-bit weights; auto: on x86 without VNNI (u8s8 saturation)
    calibration_images: int = 512  # training images used to calibrate activation ranges
    eval_images: int = 1000  # held-out images for the tolerance check and the sensitivity ranking
    tolerance: float = 0.5  # accuracy points the INT8 model may lose against fp32 on the held-out images
    confidence: float = 0.8  # one-sided confidence that the loss is within the tolerance, given the held-out
    # images' sampling error (`slimkit.quantize.sensitivity.paired_loss`); 0.5: the point estimate
    max_float_layers: int = 4  # at most this many weighted layers are kept in float by sensitivity
    sensitivity: Literal["isolated", "all_but_one"] = "isolated"  # how layers are ranked
    exclude: tuple[str, ...] = ()  # layers (ONNX node or PyTorch module names) always kept in float
    rewrites: tuple[str, ...] = ("global_pool", "pad_channels")  # fp32 graph rewrites before quantizing
    # (`slimkit.quantize.rewrite.REWRITES`): the same function in operators that run faster in INT8

    def __post_init__(self) -> None:
        self.check()  # a bad value fails where it is set, naming its option (the command line: its flag)

    def check(self) -> None:
        if self.calibration_method not in CALIBRATION_METHODS:
            raise ConfigError(f"unknown calibration_method {self.calibration_method!r}: use one of "
                              f"{list(CALIBRATION_METHODS)}")
        if self.activations not in _TYPES or self.weights not in _TYPES:
            raise ConfigError(f"activations and weights must be one of {list(_TYPES)} (got {self.activations!r}, "
                              f"{self.weights!r})")
        if self.sensitivity not in CRITERIA:
            raise ConfigError(f"unknown sensitivity {self.sensitivity!r}: use one of {list(CRITERIA)}")
        for name, least, meaning in (("calibration_images", 1, "training images that calibrate the ranges, e.g. "
                                      "512"), ("eval_images", 1, "held-out images of the tolerance check, e.g. 1000"),
                                     ("max_float_layers", 0, "layers sensitivity may keep in float, e.g. 4; 0: none")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                raise ConfigError.for_option(name, f"must be a whole number >= {least} ({meaning}); got {value!r}")
        if not _number(self.tolerance) or self.tolerance < 0:
            raise ConfigError.for_option("tolerance", "must be a number >= 0 (accuracy points INT8 may lose, e.g. "
                                                      f"0.5); got {self.tolerance!r}")
        if not _number(self.confidence) or not 0.5 <= self.confidence < 1.0:
            raise ConfigError.for_option("confidence", "must be in [0.5, 1) (0.5: the point estimate), got "
                                                       f"{self.confidence!r}")
        if not _number(self.percentile) or not 50.0 < self.percentile <= 100.0:
            raise ConfigError.for_option("percentile", f"must be in (50, 100], got {self.percentile!r}")
        check_rewrites(self.rewrites)


def _number(value: object) -> bool:
    """A finite real number (not a bool): NaN would fail every comparison and pass every range check."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)


@dataclass(frozen=True)
class FloatLayer:
    node: str  # ONNX node name
    module: str  # PyTorch module name (best effort)
    op_type: str
    reason: str  # "requested" (Int8Config.exclude) or "sensitivity"
    score: float | None  # the sensitivity criterion's cost of quantizing it (None when not ranked)


@dataclass(frozen=True)
class QuantizeResult:
    fp32_path: Path
    int8_path: Path
    fp32_bytes: int
    int8_bytes: int
    int8_layers: tuple[str, ...]  # weighted nodes that run in int8
    float_layers: tuple[FloatLayer, ...]  # weighted nodes kept in float, and why
    settings: dict[str, Any]  # the Int8Config used, reduce_range resolved, images used
    held_out: dict[str, Any] | None  # fp32 / all-INT8 / final accuracy on the held-out images (None: not checked)
    sensitivity: tuple[LayerScore, ...] = ()  # every weighted layer's cost, costliest first (empty: not ranked)
    steps: tuple[Step, ...] = ()  # the mixed-precision models tried (float layers -> held-out accuracy)
    seconds: dict[str, float] = field(default_factory=dict)  # time spent per phase
    runtime: dict[str, int] = field(default_factory=dict)  # what onnxruntime runs (its optimised graph, read once):
    # convs, int8_convs, conversions, dq_q_pairs (`slimkit.quantize.graph.runtime_summary`)

    @property
    def compression(self) -> float:
        return self.fp32_bytes / self.int8_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fp32_path"], d["int8_path"] = str(self.fp32_path), str(self.int8_path)
        d["sensitivity"] = [{"node": s.layer.node, "module": s.layer.module, "score": s.score}
                            for s in self.sensitivity]
        return d


def resolve_reduce_range(cfg: Int8Config) -> bool:
    """7-bit weights when uint8 activations meet int8 weights on an x86 CPU without VNNI: its u8 x s8 kernels
    (vpmaddubsw) add pairs of products in int16 and can saturate with full 8-bit weights (onnxruntime's advice)."""
    if cfg.reduce_range != "auto":
        return bool(cfg.reduce_range)
    x86 = platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")
    return x86 and cfg.activations == "uint8" and cfg.weights == "int8" and not has_vnni()


def ort_quantization() -> Any:
    """(onnx, onnxruntime.quantization), or MissingDependencyError: jobs call it before any work they would lose."""
    try:
        import onnx
        from onnxruntime import quantization
    except ImportError:
        raise MissingDependencyError('INT8 needs onnx and onnxruntime: pip install "slimkit[onnx]"') from None
    return onnx, quantization


def _fp32_onnx(model: nn.Module | str | Path, calib: Batches, out: Path | None) -> tuple[Path, Path]:
    if isinstance(model, nn.Module):
        if out is None:
            raise ConfigError("quantize_int8 of a PyTorch model needs `out`, the INT8 .onnx file to write")
        fp32 = out.with_name(out.name.removesuffix(".onnx").removesuffix(".int8") + ".fp32.onnx")
        import torch

        export_onnx(model, fp32, torch.from_numpy(calib.images[0][:1]))
        return fp32, out
    fp32 = Path(model)
    if not fp32.is_file():
        raise ConfigError(f"no ONNX file at {str(fp32)!r}: pass an .onnx path or a PyTorch model")
    return fp32, out or fp32.with_name(fp32.name.removesuffix(".onnx") + ".int8.onnx")


@contextlib.contextmanager
def _quiet() -> Any:
    """onnxruntime's quantizer logs advice through the root logger and prints calibration progress; keep both off
    the user's terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _prepared(fp32: Path, work: Path, rewrites: tuple[str, ...] = ()) -> tuple[Path, Any, dict[str, int]]:
    """The fp32 model as the quantizer reads it (`quant_pre_process`ed into `work`, else as exported, then the graph
    `rewrites` applied): its path, graph and how many nodes each rewrite changed. `weighted_layers` of this graph
    are the layers INT8 can keep in float (rewrites keep their names)."""
    onnx, q = ort_quantization()
    model = work / "pre.onnx"
    try:
        with _quiet():
            q.quant_pre_process(str(fp32), str(model), skip_symbolic_shape=False)
    except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantize the raw export instead
        model = fp32
    try:
        proto = onnx.load(str(model))
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"cannot read the ONNX model {str(fp32)!r}: {e}") from e
    proto, counts = apply_rewrites(proto, rewrites)
    if any(counts.values()):
        model = work / "rewritten.onnx"
        onnx.save(proto, str(model))
    return model, proto, counts


def resolve_float_layers(layers: Iterable[Layer], names: Iterable[str]) -> set[str]:
    """The ONNX nodes of the weighted `layers` that `names` (ONNX node names, or PyTorch module names as the export
    scopes them, `Layer.module`) ask to keep in float; a name matching none is a ConfigError listing the names."""
    layers = list(layers)
    by_module: dict[str, set[str]] = {}
    for layer in layers:
        by_module.setdefault(layer.module, set()).add(layer.node)
    nodes = {layer.node for layer in layers}
    out: set[str] = set()
    unknown = []
    for name in names:
        if name in nodes:
            out.add(name)
        elif name in by_module:
            out |= by_module[name]
        else:
            unknown.append(name)
    if unknown:
        modules = list(by_module)
        raise ConfigError(f"int8.exclude / --keep-float: no weighted layer {', '.join(map(repr, unknown))} in the "
                          f"exported model (only Conv / Gemm / MatMul layers with a constant weight can be kept in "
                          f"float; a module whose weight its parent uses is named by the parent); its weighted "
                          f"layers: {', '.join(modules[:16])}{' ...' if len(modules) > 16 else ''} (or ONNX node "
                          f"names, e.g. {next(iter(nodes), '/.../Conv')})")
    return out


def float_layer_nodes(model: nn.Module, example: Any, names: Iterable[str]) -> set[str]:
    """The ONNX nodes `names` keep in float once `model` is exported with `example` inputs: what `quantize_int8`'s
    `exclude` will resolve to, checked before any work (a job validates its options with it). Raises ConfigError
    for a name the quantizer could not keep in float."""
    with tempfile.TemporaryDirectory(prefix="slimkit-int8-check-") as tmp:
        fp32 = Path(tmp) / "model.onnx"
        export_onnx(model, fp32, example, check=False)
        _, proto, _ = _prepared(fp32, Path(tmp))
        return resolve_float_layers(weighted_layers(proto), names)


class _Quantizer:
    """Quantizes one pre-processed fp32 model many ways (calibration ranges computed once, then cached)."""

    def __init__(self, fp32: Path, calib: Batches, cfg: Int8Config, work: Path) -> None:
        _, q = ort_quantization()
        self.q, self.cfg, self.work, self.calib = q, cfg, work, calib
        self.model, self.proto, self.rewritten = _prepared(fp32, work, cfg.rewrites)
        self.input_name = self.proto.graph.input[0].name
        self.layers = weighted_layers(self.proto)
        self.float_pads = input_pads(self.proto)  # see input_pads: the same for every quantization of this graph
        self.cache = work / "calibration.json"
        self.reduce_range = resolve_reduce_range(cfg)
        self.count = 0

    def __call__(self, out: Path, only: set[str] | None = None, exclude: set[str] = frozenset()) -> Path:
        q, cfg = self.q, self.cfg
        qtype = {"uint8": q.QuantType.QUInt8, "int8": q.QuantType.QInt8}
        method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
                  "percentile": q.CalibrationMethod.Percentile}[cfg.calibration_method]
        # ranges merged after every reader item, so memory holds one item's intermediate tensors, not all of them
        extra = {"CalibStridedMinMax": 1, "CalibPercentile": cfg.percentile}
        exclude = set(exclude) | feeding_activations(self.proto, exclude) | self.float_pads
        try:
            with _quiet():
                q.quantize_static(str(self.model), str(out), calibration_reader(self.calib, self.input_name),
                                  quant_format=q.QuantFormat.QDQ, per_channel=cfg.per_channel,
                                  reduce_range=self.reduce_range, activation_type=qtype[cfg.activations],
                                  weight_type=qtype[cfg.weights], nodes_to_quantize=sorted(only) if only else None,
                                  nodes_to_exclude=sorted(exclude) or None, calibrate_method=method,
                                  extra_options=extra, calibration_cache_path=str(self.cache))
        except Exception as e:  # noqa: BLE001 - onnxruntime raises bare exceptions from deep inside
            raise ExportError(f"onnxruntime could not quantize {self.model.name}: {type(e).__name__}: {e}") from e
        self.count += 1
        nodes = {layer.node for layer in self.layers}
        keep_float(out, (nodes & exclude) | (nodes - only if only else set()))
        return out


def keep_float(path: Path, nodes: Iterable[str]) -> int:
    """Make the float layers `nodes` of the QDQ model at `path` stay float in onnxruntime (rewrites the file; returns
    how many layers it changed).

    onnxruntime's graph optimiser (WeightBiasQuantization) gives a float Conv / ConvTranspose / Gemm int8 weights
    when its input comes from a DequantizeLinear with one scale for the tensor. Each such layer here gets a
    DequantizeLinear of its own with that scale repeated per channel (axis 1): the same values, which the optimiser
    leaves alone (it requires a per-tensor scale), so the layer runs in float as chosen."""
    onnx, _ = ort_quantization()
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    inits = {t.name: t for t in g.initializer}
    wanted, changed = set(nodes), 0
    for i, node in reversed(list(enumerate(g.node))):  # back to front: inserting keeps earlier indices
        dq = producers.get(node.input[0]) if node.input else None
        if node.name not in wanted or node.op_type not in ("Conv", "ConvTranspose", "Gemm") or dq is None or \
                dq.op_type != "DequantizeLinear" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        scale = inits.get(dq.input[1])
        zero = inits.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else None
        w = inits[node.input[1]].dims
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            channels = w[1] * attrs.get("group", 1)
        elif node.op_type == "ConvTranspose":  # weights (in, out / group, ...)
            channels = w[0]
        else:  # Gemm's B is (in, out), or (out, in) with transB (a torch Linear)
            channels = w[1] if attrs.get("transB", 0) else w[0]
        if scale is None or numpy_helper.to_array(scale).size != 1 or channels < 2 or \
                (node.op_type == "Gemm" and attrs.get("transA", 0)):
            continue
        args = [dq.input[0]]
        for t in (scale, zero):
            if t is not None:
                a = numpy_helper.to_array(t).reshape(-1)
                g.initializer.append(numpy_helper.from_array(np.repeat(a, channels), f"{node.name}_float_in_{t.name}"))
                args.append(g.initializer[-1].name)
        out = f"{node.input[0]}_float_{changed}"
        g.node.insert(i, helper.make_node("DequantizeLinear", args, [out], f"{node.name}_float_in", axis=1))
        node.input[0] = out
        changed += 1
    if changed:
        onnx.save(model, str(path))
    return changed


def _held_out(eval_data: Any, cfg: Int8Config) -> Batches | None:
    return None if eval_data is None else as_batches(eval_data, cfg.eval_images, "held-out evaluation")


def quantize_int8(model: nn.Module | str | Path, calibration: Iterable[Any], out: str | Path | None = None, *,
                  eval_data: Iterable[Any] | None = None, config: Int8Config | None = None,
                  **overrides: Any) -> QuantizeResult:
    """Quantize a PyTorch model or an fp32 ONNX file to INT8 (QDQ, per-channel weights) and write `out`.

    `calibration`: batches of training images (tensors or (images, labels) tuples; `calibration_images` are
    used). `eval_data`: held-out batches with labels (without labels, agreement with fp32 is the accuracy); when
    given, the INT8 model is checked against fp32 and the layers that cost the most stay in float until it is
    within `tolerance` points (at most `max_float_layers`). Options are `Int8Config` fields, given as `config`
    or keywords. The caller's model is not changed.
    """
    cfg = replace(config or Int8Config(), **overrides)  # (checked on creation)
    t0 = time.perf_counter()
    calib = as_batches(calibration, cfg.calibration_images)
    fp32, dest = _fp32_onnx(model, calib, Path(out) if out is not None else None)
    dest.parent.mkdir(parents=True, exist_ok=True)
    held = _held_out(eval_data, cfg)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="slimkit-int8-") as tmp:
        work = Path(tmp)
        quant = _Quantizer(fp32, calib, cfg, work)
        requested = resolve_float_layers(quant.layers, cfg.exclude)
        full = quant(work / "all_int8.onnx", exclude=requested)
        seconds["calibrate_quantize"] = time.perf_counter() - t0
        float_nodes: tuple[str, ...] = ()
        ranked: list[LayerScore] = []
        steps: list[Step] = []
        summary = None
        if held is not None:
            t1 = time.perf_counter()
            float_nodes, ranked, steps, summary = _mixed_precision(quant, fp32, full, held, requested, cfg, work)
            seconds["sensitivity"] = time.perf_counter() - t1
        final = quant(work / "final.onnx", exclude=requested | set(float_nodes)) if float_nodes else full
        atomic_write(dest, lambda tmp: shutil.copyfile(final, tmp))  # whole or not at all
        quantizations = quant.count
        layers = {layer.node: layer for layer in quant.layers}
        reduce_range, rewritten = quant.reduce_range, quant.rewritten
        onnx, _ = ort_quantization()
        kept = [n for n in [*sorted(requested), *float_nodes] if n in layers]
        # what onnxruntime really runs: its optimiser may quantize a layer the file keeps in float
        optimized = onnx.load(str(onnx_optimized(dest, work / "optimized.onnx")))
        requantized, runtime = run_as_int8(optimized, kept), runtime_summary(optimized)
    int8 = int8_layers(onnx.load(str(dest))) | requantized
    scores = {s.layer.node: s.score for s in ranked}
    floats = tuple(FloatLayer(n, layers[n].module, layers[n].op_type,
                              "requested" if n in requested else "sensitivity", scores.get(n))
                   for n in kept if n not in requantized)
    if requantized:
        names = ", ".join(layers[n].module for n in kept if n in requantized)
        warnings.warn(f"INT8: onnxruntime's graph optimiser quantizes {len(requantized)} layer(s) kept in float "
                      f"({names}): a float layer fed straight by a dequantized tensor gets int8 weights when the "
                      "model is loaded. They run in int8 and are counted as such; the held-out accuracy was "
                      "measured as onnxruntime runs the model.", stacklevel=2)
    settings = {**asdict(cfg), "reduce_range": reduce_range, "calibration_images_used": calib.count,
                "quantizations": quantizations, "rewritten": rewritten,
                "requantized_by_onnxruntime": [layers[n].module for n in kept if n in requantized]}
    seconds["total"] = time.perf_counter() - t0
    return QuantizeResult(fp32, dest, file_bytes(fp32), file_bytes(dest),
                          tuple(n for n in layers if n in int8), floats, settings, summary, tuple(ranked),
                          tuple(steps), seconds, runtime)


def _mixed_precision(quant: _Quantizer, fp32: Path, full: Path, held: Batches, requested: set[str],
                     cfg: Int8Config, work: Path) -> tuple[tuple[str, ...], list[LayerScore], list[Step], dict]:
    reference = onnx_logits(onnx_session(fp32), held)
    labels = np.concatenate(held.labels) if held.labels is not None else reference.argmax(1)
    tolerance = cfg.tolerance / 100.0
    start = make_step((), onnx_logits(onnx_session(full), held), reference, labels, cfg.confidence)
    summary = {"images": held.count, "labels": "labels" if held.labels is not None else "fp32 predictions",
               "fp32_acc": accuracy(reference, labels), "int8_all_acc": start.acc, "tolerance_points": cfg.tolerance,
               "confidence": cfg.confidence, "int8_all_loss_upper_points": 100.0 * start.loss_upper}
    candidates = [layer for layer in quant.layers if layer.node not in requested]
    if within(start, tolerance) or cfg.max_float_layers == 0 or not candidates:
        return (), [], [start], {**summary, **_verdict(start, tolerance)}

    def run(only: set[str] | None, exclude: set[str]) -> np.ndarray:
        path = quant(work / "trial.onnx", only=only, exclude=exclude)
        return onnx_logits(onnx_session(path), held)

    ranked = rank_layers(candidates, run, reference, cfg.sensitivity, requested, full_error=start.error)
    chosen, steps = choose_float_layers(ranked, run, reference, labels, tolerance, cfg.max_float_layers, start,
                                        requested, cfg.confidence)
    final = next(s for s in steps if s.float_layers == chosen)
    return chosen, ranked, steps, {**summary, **_verdict(final, tolerance)}


def _verdict(final: Step, tolerance: float) -> dict[str, Any]:
    """The chosen model's held-out record: accuracy, images lost / gained against fp32, the loss bound, met or not."""
    return {"int8_acc": final.acc, "lost": final.lost, "gained": final.gained,
            "loss_upper_points": 100.0 * final.loss_upper, "tolerance_met": within(final, tolerance)}
