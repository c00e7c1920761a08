"""Reading quantized ONNX graphs: which layers carry weights, which of them run in int8, and their PyTorch names.

Pure functions over `onnx.ModelProto`s; nothing here changes a model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Layer", "weighted_layers", "int8_layers", "module_name", "op_counts", "file_bytes", "feeding_activations"]

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
