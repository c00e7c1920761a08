"""Rewrites of an fp32 ONNX graph before INT8 quantization: the same function, in operators onnxruntime runs faster
once quantized.

- `global_pool`: a ReduceMean over exactly the spatial axes of a 4-D tensor (PyTorch's `x.mean((2, 3))` and
  `AdaptiveAvgPool2d(1)` + flatten) becomes a GlobalAveragePool (+ Flatten when keepdims=0). onnxruntime's QDQ
  quantizer leaves ReduceMean in float, so the INT8 graph dequantizes at the pool; GlobalAveragePool is quantized
  (QLinearGlobalAveragePool) and the Flatten dropped between quantized neighbours.
- `pad_channels`: a convolution reading the graph input with input channels not a multiple of 4 (a grey or RGB
  stem) gets zero input channels in its weight and a Pad of its input with zero channels up to the next multiple
  of 4: onnxruntime's fast x86 INT8 convolution takes only multiples of 4 (`slimkit.profile.hardware`). The extra
  products are zero times zero, so the outputs are unchanged in exact arithmetic.

Pure functions: each takes an `onnx.ModelProto` and returns a new one and how many nodes it rewrote; the input is
never changed. Node names of weighted layers are kept, so layer names (`weighted_layers`, `Int8Config.exclude`)
still resolve.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from slimkit.errors import ConfigError
from slimkit.profile.hardware import INT8_CONV_IN_MULTIPLE

__all__ = ["REWRITES", "global_pool", "pad_channels", "apply_rewrites", "check_rewrites", "input_pads"]

Rewrite = Callable[[Any], tuple[Any, int]]


def _copy(model: Any) -> Any:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def _opset(model: Any) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _constant(graph: Any, name: str) -> np.ndarray | None:
    """The value of tensor `name` when it is an initializer or a Constant node's output (through Identity nodes)."""
    from onnx import helper, numpy_helper

    producers = {o: n for n in graph.node for o in n.output}
    for _ in range(8):
        init = next((t for t in graph.initializer if t.name == name), None)
        if init is not None:
            return numpy_helper.to_array(init)
        node = producers.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name in ("value", "value_ints", "value_int")), None)
            return None if attr is None else np.asarray(
                numpy_helper.to_array(attr.t) if attr.name == "value" else helper.get_attribute_value(attr))
        if node.op_type != "Identity":
            return None
        name = node.input[0]
    return None


def _ranks(model: Any) -> dict[str, int]:
    """Rank of every tensor whose shape inference knows it (the model's own value_info first)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - an unusual graph: fall back to what the model says about itself
        inferred = model.graph
    out = {}
    for v in [*inferred.input, *inferred.value_info, *inferred.output, *model.graph.value_info]:
        t = v.type.tensor_type
        if t.HasField("shape"):
            out[v.name] = len(t.shape.dim)
    return out


def _data_inputs(graph: Any) -> set[str]:
    """The graph's inputs that are data, not initializers listed as inputs (older exporters list weights too)."""
    return {v.name for v in graph.input} - {t.name for t in graph.initializer}


def _unique(graph: Any, base: str) -> str:
    taken = {n.name for n in graph.node} | {o for n in graph.node for o in n.output} | \
        {t.name for t in graph.initializer} | {v.name for v in graph.input}
    name, i = base, 0
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    return name


def _drop_unused(graph: Any, names: Iterable[str]) -> None:
    """Remove the initializers and Constant nodes among `names` that nothing reads any more."""
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    gone = set(names) - used
    keep = [t for t in graph.initializer if t.name not in gone]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and set(n.output) <= gone)]
    del graph.node[:]
    graph.node.extend(nodes)


def _spatial_mean(node: Any, graph: Any, ranks: dict[str, int], opset: int) -> tuple[bool, int]:
    """(whether `node` is a ReduceMean over exactly axes (2, 3) of a 4-D tensor, its keepdims)."""
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    keepdims = int(attrs.get("keepdims", 1))
    if opset >= 18:
        axes = _constant(graph, node.input[1]) if len(node.input) > 1 and node.input[1] else None
    else:
        axes = attrs.get("axes")
    rank = ranks.get(node.input[0])
    if axes is None or rank != 4:  # no axes: every axis (or none with noop_with_empty_axes)
        return False, keepdims
    return sorted(int(a) % 4 for a in np.asarray(axes).reshape(-1)) == [2, 3], keepdims


def global_pool(model: Any) -> tuple[Any, int]:
    """ReduceMean over exactly the spatial axes (2, 3) of a 4-D tensor -> GlobalAveragePool, then Flatten when
    keepdims=0 (N x C x 1 x 1 -> N x C), so every output keeps its name and shape. Axes as an attribute
    (opset < 18) or a constant second input (opset >= 18), negative or not. Returns (new model, nodes rewritten)."""
    from onnx import helper

    out = _copy(model)
    g, opset = out.graph, _opset(out)
    ranks = _ranks(out)
    nodes, count, orphans = [], 0, []
    for n in g.node:
        spatial, keepdims = _spatial_mean(n, g, ranks, opset) if n.op_type == "ReduceMean" else (False, 1)
        if not spatial:
            nodes.append(n)
            continue
        pooled = n.output[0] if keepdims else _unique(g, f"{n.output[0]}_pooled")
        nodes.append(helper.make_node("GlobalAveragePool", [n.input[0]], [pooled],
                                      _unique(g, f"{n.name}_as_GlobalAveragePool")))
        if not keepdims:
            nodes.append(helper.make_node("Flatten", [pooled], [n.output[0]], _unique(g, f"{n.name}_flatten"),
                                          axis=1))
        orphans.extend(n.input[1:])
        count += 1
    del g.node[:]
    g.node.extend(nodes)
    _drop_unused(g, orphans)
    return out, count


def pad_channels(model: Any, multiple: int = INT8_CONV_IN_MULTIPLE) -> tuple[Any, int]:
    """Every ungrouped Conv reading a graph input whose input channels are not a multiple of `multiple` gets its
    weight padded with zero input channels and its input padded with zero channels (a Pad on axis 1) up to the next
    multiple. The padded channels add 0 x 0 to every sum. Opset >= 11 (Pad with its pads as an input). Returns
    (new model, convolutions rewritten)."""
    from onnx import helper, numpy_helper

    out = _copy(model)
    g = out.graph
    if _opset(out) < 11:
        return out, 0
    inputs = _data_inputs(g)
    nodes, count, orphans = [], 0, []
    for n in g.node:
        groups = next((a.i for a in n.attribute if a.name == "group"), 1)
        w = _constant(g, n.input[1]) if n.op_type == "Conv" and len(n.input) > 1 and n.input[0] in inputs else None
        extra = (-w.shape[1]) % multiple if w is not None and w.ndim >= 3 and groups == 1 else 0
        if not extra:
            nodes.append(n)
            continue
        rank = w.ndim
        pads = np.zeros(2 * rank, np.int64)
        pads[rank + 1] = extra  # the end of axis 1
        wide = np.concatenate([w, np.zeros((w.shape[0], extra, *w.shape[2:]), w.dtype)], axis=1)
        pads_name, w_name = _unique(g, f"{n.name}_channel_pads"), _unique(g, f"{n.input[1]}_padded")
        padded = _unique(g, f"{n.input[0]}_padded_{w.shape[1] + extra}ch")
        g.initializer.extend([numpy_helper.from_array(pads, pads_name), numpy_helper.from_array(wide, w_name)])
        nodes.append(helper.make_node("Pad", [n.input[0], pads_name], [padded], _unique(g, f"{n.name}_pad_input"),
                                      mode="constant"))
        orphans.append(n.input[1])
        n.input[0], n.input[1] = padded, w_name
        nodes.append(n)
        count += 1
    del g.node[:]
    g.node.extend(nodes)
    _drop_unused(g, orphans)
    return out, count


def input_pads(model: Any) -> set[str]:
    """The Pad nodes that read a graph input (as `pad_channels` inserts them): quantized, onnxruntime would run them
    as dequantize -> float Pad -> quantize; left in float, the input is padded first and quantized once."""
    inputs = _data_inputs(model.graph)
    return {n.name for n in model.graph.node if n.op_type == "Pad" and n.input and n.input[0] in inputs}


REWRITES: dict[str, Rewrite] = {"global_pool": global_pool, "pad_channels": pad_channels}


def check_rewrites(names: Iterable[str]) -> None:
    unknown = [n for n in names if n not in REWRITES]
    if unknown:
        raise ConfigError(f"unknown INT8 graph rewrite(s) {', '.join(map(repr, unknown))}: use any of "
                          f"{list(REWRITES)}")


def apply_rewrites(model: Any, names: Iterable[str]) -> tuple[Any, dict[str, int]]:
    """`model` with the rewrites `names` applied in turn, and how many nodes each rewrote."""
    names = tuple(names)
    check_rewrites(names)
    counts = {}
    for name in names:
        model, counts[name] = REWRITES[name](model)
    return model, counts
