"""Reading quantized ONNX graphs: which layers carry weights, which of them run in int8, and their PyTorch names.

Pure functions over `onnx.ModelProto`s; nothing here changes a model.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slimkit.profile.hardware import int8_conv_misses

__all__ = ["Layer", "weighted_layers", "int8_layers", "module_name", "op_counts", "file_bytes", "feeding_activations",
           "dq_q_pairs", "conversions", "KernelMiss", "int8_kernel_misses", "run_as_int8", "runtime_summary",
           "INT_KERNELS"]

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


@dataclass(frozen=True)
class Layer:
    node: str  # ONNX node name (what onnxruntime's `nodes_to_exclude` takes)
    module: str  # best-effort PyTorch module name ("stages.0.0.conv1"), else the node name
    op_type: str


def module_name(node_name: str) -> str:
    """'/stages/stages.0/stages.0.0/conv1/Conv' -> 'stages.0.0.conv1' (TorchScript exporter scopes)."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) < 2:
        return node_name
    name = ""
    for p in parts[:-1]:
        name = p if not name or p.startswith(name + ".") else f"{name}.{p}"
    return name


def _initializers(model: Any) -> set[str]:
    return {t.name for t in model.graph.initializer}


def _producers(model: Any) -> dict[str, Any]:
    return {o: n for n in model.graph.node for o in n.output}


def _is_constant(name: str, inits: set[str], producers: dict[str, Any]) -> bool:
    """An initializer, or reached from one through Identity / DequantizeLinear / Transpose / Constant nodes."""
    seen = 0
    while name not in inits:
        node = producers.get(name)
        if node is None or seen > 8:
            return False
        if node.op_type == "Constant":
            return True
        if node.op_type not in ("Identity", "DequantizeLinear", "Transpose", "Reshape", "Cast") or not node.input:
            return False
        name, seen = node.input[0], seen + 1
    return True


def weighted_layers(model: Any) -> list[Layer]:
    """Conv / Gemm / MatMul nodes whose second input is a constant weight, in graph order (the layers
    sensitivity-guided mixed precision chooses among)."""
    inits, producers = _initializers(model), _producers(model)
    out = []
    for n in model.graph.node:
        if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and _is_constant(n.input[1], inits, producers):
            out.append(Layer(n.name, module_name(n.name), n.op_type))
    return out


def int8_layers(model: Any) -> set[str]:
    """Names of the weighted nodes of a QDQ model whose weight and first input are both dequantized from int8
    (onnxruntime runs these as integer kernels); the others run in float."""
    producers = _producers(model)

    def dq(name: str) -> bool:
        node = producers.get(name)
        return node is not None and node.op_type == "DequantizeLinear"

    return {n.name for n in model.graph.node
            if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and dq(n.input[0]) and dq(n.input[1])}


# onnxruntime's integer kernels for weighted layers (what its optimiser fuses a QDQ group into)
INT_KERNELS = ("QLinearConv", "QLinearConvTranspose", "QGemm", "QLinearMatMul", "ConvInteger", "MatMulInteger",
                "MatMulIntegerToFloat", "DynamicQuantizeMatMul")


def run_as_int8(optimized: Any, nodes: Iterable[str]) -> set[str]:
    """The `nodes` (weighted layers of a QDQ model, by name) that onnxruntime runs as integer kernels, read from its
    optimised graph `optimized` (`slimkit.export.onnx_optimized`).

    What a QDQ file says is not always what runs: onnxruntime's optimiser (its WeightBiasQuantization pass)
    quantizes the float weight of a layer that sits between a DequantizeLinear and a QuantizeLinear, so a layer
    kept in float with a dequantized input still runs in int8. Fused nodes keep the layer's name, plus
    `_token_N` suffixes."""
    ran = {re.sub(r"(_token_\d+)+$", "", n.name) for n in optimized.graph.node if n.op_type in INT_KERNELS}
    return {n for n in nodes if n in ran}


# ops a value passes through unchanged in kind (a clamp before them is still a clamp after them)
_PASS_THROUGH = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Reshape", "Flatten", "Transpose",
                 "Squeeze", "Unsqueeze", "Pad", "Resize", "Slice", "Split", "Concat", "Identity")


def feeding_activations(model: Any, nodes: Iterable[str]) -> set[str]:
    """The Relu / Clip nodes whose output reaches the first input of `nodes` through pass-through ops only.

    onnxruntime's QDQ quantizer deletes a Relu / Clip after a quantized layer and lets the output range of the next
    QuantizeLinear do the clamping; when the consumer stays in float, onnxruntime's graph optimiser may drop that
    Q/DQ pair and, with it, the activation. Keeping these activations unquantized keeps them in the graph."""
    producers = _producers(model)
    by_name = {n.name: n for n in model.graph.node}
    found: set[str] = set()
    for name in nodes:
        node = by_name.get(name)
        todo = [node.input[0]] if node is not None and node.input else []
        seen: set[str] = set()
        while todo:
            tensor = todo.pop()
            prod = producers.get(tensor)
            if prod is None or tensor in seen:
                continue
            seen.add(tensor)
            if prod.op_type in ("Relu", "Clip"):
                found.add(prod.name)
            elif prod.op_type in _PASS_THROUGH:
                todo.extend(prod.input[:1] if prod.op_type != "Concat" else prod.input)
    return found


def dq_q_pairs(model: Any) -> list[tuple[str, str]]:
    """(DequantizeLinear, QuantizeLinear) node pairs where a dequantized tensor is quantized again with nothing
    computed in between: a round trip through float that costs two passes over the tensor and does no work. In
    onnxruntime's optimised graph (`SessionOptions.optimized_model_filepath`) there should be none: every QDQ group
    is fused into an integer kernel (QLinearConv, QLinearAdd, QGemm ...)."""
    producers = _producers(model)
    return [(producers[n.input[0]].name, n.name) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input and n.input[0] in producers
            and producers[n.input[0]].op_type == "DequantizeLinear"]


def conversions(model: Any) -> int:
    """QuantizeLinear + DequantizeLinear nodes of a graph. In onnxruntime's optimised graph each is one pass over an
    activation tensor between float and int8: the model's input and output, and two per float island (a layer kept
    in float, or an operator with no integer kernel, inside the INT8 graph)."""
    return sum(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


_FLOAT_CONVS = ("Conv", "FusedConv", "NchwcConv")  # a float convolution in onnxruntime's optimised graph


def runtime_summary(optimized: Any) -> dict[str, int]:
    """What onnxruntime runs, read from its optimised graph `optimized` (`slimkit.export.onnx_optimized`): its
    convolutions, those in int8, the float <-> int8 conversions (`conversions`) and the dequantize -> quantize
    round trips left (`dq_q_pairs`)."""
    ops = [n.op_type for n in optimized.graph.node]
    int8_convs = sum(op in INT_KERNELS and "Conv" in op for op in ops)
    return {"convs": int8_convs + sum(op in _FLOAT_CONVS for op in ops), "int8_convs": int8_convs,
            "conversions": conversions(optimized), "dq_q_pairs": len(dq_q_pairs(optimized))}


@dataclass(frozen=True)
class KernelMiss:
    layer: Layer
    reason: str  # why onnxruntime's fast INT8 convolution kernel does not take it


def _initializer(model: Any, name: str) -> Any:
    return next((t for t in model.graph.initializer if t.name == name), None)


def int8_kernel_misses(model: Any) -> list[KernelMiss]:
    """The INT8 convolutions of a QDQ model that onnxruntime's fast x86 INT8 kernels do not take, and why: output
    channels fewer than 16 or not a multiple of 8, input channels not a multiple of 4, a depthwise convolution whose
    channels are not a multiple of 16, another grouped convolution (`slimkit.profile.hardware.int8_conv_misses`), or
    weights that are not symmetric int8. These rules are onnxruntime's x86 ones (other CPUs have their own)."""
    from onnx import TensorProto, numpy_helper

    producers, int8 = _producers(model), int8_layers(model)
    out = []
    for n in model.graph.node:
        if n.op_type != "Conv" or n.name not in int8:
            continue
        dq = producers[n.input[1]]
        w = _initializer(model, dq.input[0])
        if w is None or len(w.dims) < 3:
            continue
        zero = _initializer(model, dq.input[2]) if len(dq.input) > 2 else None
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        cout, cin = int(w.dims[0]), int(w.dims[1]) * group
        layer = Layer(n.name, module_name(n.name), n.op_type)
        if w.data_type != TensorProto.INT8 or (zero is not None and numpy_helper.to_array(zero).any()):
            reason = "weights are not symmetric int8"
        else:
            reason = "; ".join(int8_conv_misses(cin, cout, group))
        if reason:
            out.append(KernelMiss(layer, reason))
    return out


def op_counts(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for n in model.graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def file_bytes(path: str | Path) -> int:
    """Size on disk of an ONNX model, external data files included."""
    p = Path(path)
    size = p.stat().st_size
    data = p.with_name(p.name + ".data")
    return size + (data.stat().st_size if data.is_file() else 0)
