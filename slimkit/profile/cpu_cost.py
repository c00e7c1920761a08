"""What a layer costs in time on a CPU: a roofline of onnxruntime's fp32 kernels, by layer shape (pure counting).

A convolution or linear layer takes the longer of its arithmetic (MACs at the kernel's sustained rate: depthwise
convolutions run at ~0.4x the MAC rate of dense ones, a first convolution over 3 image channels at ~0.5x) and its
memory traffic (input, output and weights), plus a fixed cost per operator. Channels count in whole vector blocks
(`channel_multiple`): a layer with 9 of 16 channels runs 16. An activation or normalisation that does not fuse into
the convolution before it (SiLU, GELU, LayerNorm; ReLU does fuse) costs a time per element.

The rates were fitted on one core of an AVX2 x86 CPU to 951 per-operator onnxruntime 1.32 timings (7 timm models at
224x224, unpruned and pruned; median error 9% per operator, 3-10% per model); the arithmetic rates scale with the
vector width (16-wide blocks on AVX-512 run twice the MACs per ns), memory rates do not. Absolute times are
estimates; what pruning uses is how they *change* with the channel counts, which the roofline follows.

For a model that will run in INT8 (`cpu_rates(kernels="int8")`), convolutions and linear layers move a byte per
value instead of four and run their arithmetic at `Int8Rates` times the fp32 rate: faster on onnxruntime's fast
INT8 convolution, slower on its generic path for the channel counts that kernel does not take
(`slimkit.profile.hardware.int8_conv_misses`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from slimkit.profile.hardware import channel_multiple, int8_conv_misses

__all__ = ["CpuRates", "Int8Rates", "LayerShape", "cpu_rates", "cost_breakdown", "layer_ns", "layer_macs",
           "trace_layers", "ELEMENTWISE_NS"]

# ns per element of an unfused elementwise pass (read + write, one core), by module class name (lower case)
ELEMENTWISE_NS = {
    "silu": 0.56, "swish": 0.56, "gelu": 1.3, "quickgelu": 0.56, "hardswish": 0.3, "hardsigmoid": 0.3,
    "sigmoid": 0.5, "mish": 1.0, "tanh": 0.6, "elu": 0.6, "softmax": 0.6, "layernorm": 0.9, "layernorm2d": 0.9,
    "groupnorm": 0.9, "rmsnorm": 0.9,
}


@dataclass(frozen=True)
class Int8Rates:
    """INT8 arithmetic rate over fp32's, by kernel: fitted to `benchmarks/int8.py --profile` (onnxruntime 1.32, one
    AVX2 core without VNNI, batch 32; README "Where the batch-32 time goes"): the fast kernel runs dense
    convolutions in 0.4-0.55x of fp32's time (0.5-0.8x below 48 channels) and depthwise ones in 0.3-2.8x (about
    fp32's on average); the generic path 1.26x (dense) and 1.9-2.8x (depthwise)."""

    dense: float = 2.0
    depthwise: float = 1.0
    generic: float = 0.8
    generic_depthwise: float = 0.45


@dataclass(frozen=True)
class CpuRates:
    """Sustained rates of one core (MACs and bytes per ns), the per-operator cost and the channel block."""

    block: int = 8
    dense_macs_per_ns: float = 39.8  # dense convolutions
    depthwise_macs_per_ns: float = 15.7  # depthwise convolutions
    stem_macs_per_ns: float = 20.7  # convolutions over fewer input channels than a block (an image's 3)
    linear_macs_per_ns: float = 41.2  # linear layers / matmuls
    bytes_per_ns: float = 16.8  # streaming activations and weights
    op_ns: float = 10_000.0  # fixed cost of one operator
    elementwise_ns: dict[str, float] = field(default_factory=lambda: dict(ELEMENTWISE_NS))
    int8: Int8Rates | None = None  # the model runs in INT8 (None: fp32)


def cpu_rates(capability: str | None = None, kernels: str = "fp32") -> CpuRates:
    """The rates of this machine's CPU (or of `capability`, a `cpu_capability()` string): arithmetic scales with the
    vector block width, relative to the 8-wide AVX2 core the constants were fitted on; `kernels="int8"` for a model
    that will run in INT8."""
    block = channel_multiple(capability)
    s = block / 8
    base = CpuRates()
    return CpuRates(block, base.dense_macs_per_ns * s, base.depthwise_macs_per_ns * s, base.stem_macs_per_ns * s,
                    base.linear_macs_per_ns * s, base.bytes_per_ns, base.op_ns,
                    int8=Int8Rates() if kernels == "int8" else None)


@dataclass(frozen=True)
class LayerShape:
    """One convolution or linear layer as the kernels see it, per sample: `pixels` are output positions (H x W, or
    tokens for a linear layer), `pixels_in` input positions (stride 2 reads 4 per output position)."""

    kind: Literal["conv", "linear"]
    c_in: int
    c_out: int
    groups: int = 1
    kernel: int = 1  # kernel height x width
    pixels: int = 1
    pixels_in: int = 1

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.c_in

    def resized(self, c_in: int, c_out: int) -> LayerShape:
        """The layer with `c_in` / `c_out` channels (a depthwise conv keeps one group per input channel)."""
        groups = c_in if self.depthwise else self.groups
        return LayerShape(self.kind, c_in, c_out, groups, self.kernel, self.pixels, self.pixels_in)


def layer_macs(s: LayerShape) -> float:
    return s.pixels * s.c_out * (s.c_in / s.groups) * s.kernel


def _padded(c: float, block: int) -> float:
    return math.ceil(c / block) * block if c > 0 else 0.0


def layer_ns(s: LayerShape, rates: CpuRates, batch: int = 1) -> float:
    """Estimated ns of one layer at `batch` on one core: max(arithmetic, memory) + the operator's fixed cost."""
    b = rates.block
    c_in = s.c_in if (s.kind == "conv" and s.c_in < b and not s.depthwise) else _padded(s.c_in, b)
    c_out = _padded(s.c_out, b)
    groups = c_in if s.depthwise else s.groups
    macs = batch * s.pixels * c_out * (c_in / groups) * s.kernel
    if s.kind == "linear":
        rate = rates.linear_macs_per_ns
    elif s.depthwise:
        rate = rates.depthwise_macs_per_ns
    elif s.c_in < b:
        rate = rates.stem_macs_per_ns
    else:
        rate = rates.dense_macs_per_ns
    size = 4
    if rates.int8 is not None:
        size, q = 1, rates.int8
        c = (round(s.c_in), round(s.c_out))
        miss = s.kind == "conv" and bool(int8_conv_misses(*c, c[0] if s.depthwise else s.groups))
        rate *= (q.generic_depthwise if s.depthwise else q.generic) if miss else \
            (q.depthwise if s.depthwise else q.dense)
    weights = c_out * (c_in / groups) * s.kernel
    traffic = size * (batch * (s.pixels_in * c_in + s.pixels * c_out) + weights)
    return max(macs / rate, traffic / rates.bytes_per_ns) + rates.op_ns


def elementwise_ns(kind: str, elements: float, rates: CpuRates) -> float:
    """Estimated ns of one unfused elementwise pass of `kind` over `elements` values (0 for kinds that fuse)."""
    per = rates.elementwise_ns.get(kind)
    return 0.0 if per is None else per * elements + rates.op_ns


@dataclass(frozen=True)
class TracedLayer:
    """A module met in one forward pass: its name, class, shapes, and for an elementwise module the name of the
    conv / linear / norm module whose output it reads (the most recent one with that shape), if any."""

    name: str
    kind: str  # "conv", "linear", "norm", or an ELEMENTWISE_NS key
    shape: LayerShape | None
    elements: int  # output values per sample
    source: str | None = None


def trace_layers(model: nn.Module, inputs: Sequence[torch.Tensor]) -> list[TracedLayer]:
    """Convolutions, linear layers, norms and costly elementwise modules in call order (one forward pass with
    hooks; the model is not changed). Each module counts once, at its first call."""
    calls: list[tuple[str, nn.Module, tuple[int, ...], tuple[int, ...]]] = []

    def hook(name: str) -> Any:
        def fn(mod: nn.Module, args: Any, out: Any) -> None:
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if x is not None and isinstance(out, torch.Tensor):
                calls.append((name, mod, tuple(x.shape), tuple(out.shape)))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    out: list[TracedLayer] = []
    seen: set[str] = set()
    last_by_shape: dict[tuple[int, ...], str] = {}
    for name, mod, xs, ys in calls:
        if name in seen:
            continue
        seen.add(name)
        n = int(math.prod(ys[1:]))
        kind = type(mod).__name__.lower()
        if isinstance(mod, nn.Conv2d) and len(xs) == 4 and len(ys) == 4:
            kh, kw = mod.kernel_size
            shape = LayerShape("conv", mod.in_channels, mod.out_channels, mod.groups, kh * kw, ys[2] * ys[3],
                               xs[2] * xs[3])
            out.append(TracedLayer(name, "conv", shape, n))
        elif isinstance(mod, nn.Linear):
            tokens = int(math.prod(ys[1:-1])) if len(ys) > 2 else 1
            shape = LayerShape("linear", mod.in_features, mod.out_features, 1, 1, tokens, tokens)
            out.append(TracedLayer(name, "linear", shape, n))
        elif isinstance(mod, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)):
            out.append(TracedLayer(name, kind if kind in ELEMENTWISE_NS else "norm", None, n))
        elif kind in ELEMENTWISE_NS:
            out.append(TracedLayer(name, kind, None, n, last_by_shape.get(xs)))
        else:
            continue
        last_by_shape[ys] = name
    return out


def cost_breakdown(model: nn.Module, inputs: Sequence[torch.Tensor], rates: CpuRates | None = None) -> dict[str, float]:
    """Where a model's estimated batch-1 time goes on this CPU, in ns (pure counting, the model is not changed):
    `compute` (arithmetic-bound layers), `memory` (layers bound by memory traffic, e.g. depthwise convs at high
    resolution), `overhead` (the fixed cost of every operator), `elementwise` (unfused activations and norms),
    `padding` (the part of `compute` spent on channels a vector block pads), and `layers` / `partial_blocks` (how many
    convolution / linear layers there are and how many of them have output channels that are not whole blocks)."""
    rates = rates or cpu_rates()
    out = dict.fromkeys(("compute", "memory", "overhead", "elementwise", "padding", "layers", "partial_blocks"), 0.0)
    arithmetic = replace(rates, bytes_per_ns=math.inf, op_ns=0.0)  # arithmetic only, channels padded to blocks
    for t in trace_layers(model, inputs):
        if t.shape is None:
            ns = elementwise_ns(t.kind, t.elements, rates)
            if ns:
                out["elementwise"] += ns - rates.op_ns
                out["overhead"] += rates.op_ns
            continue
        s = t.shape
        ns, arith = layer_ns(s, rates) - rates.op_ns, layer_ns(s, arithmetic)
        out["overhead"] += rates.op_ns
        out["layers"] += 1
        out["partial_blocks"] += bool(s.c_out % rates.block)
        if arith >= ns:
            out["compute"] += ns
            out["padding"] += ns * (1 - s.c_out / _padded(s.c_out, rates.block))
        else:
            out["memory"] += ns
    return out
