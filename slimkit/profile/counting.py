"""Count MACs and parameters, per module and per kind, with torch's FlopCounterMode (functional ops included).

Headline MACs are multiply-accumulates of convolutions, linear layers, matmuls and attention — the convention of
the papers slimkit checks against. Normalisation, pooling and reductions are counted (one op per output element)
and reported separately under `other_ops`; they are not part of the headline number.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from slimkit.errors import ProfileError
from slimkit.inputs import as_tensor_tuple, size_hint

__all__ = ["LayerCost", "ProfileReport", "profile", "count_macs", "count_node_macs", "count_params", "make_inputs"]

aten = torch.ops.aten

_KIND = {
    "convolution": "conv", "_convolution": "conv", "conv_backward": "conv",
    "mm": "linear", "addmm": "linear", "bmm": "matmul", "baddbmm": "matmul",
    "_scaled_dot_product_efficient_attention": "attention", "_scaled_dot_product_flash_attention": "attention",
    "_scaled_dot_product_cudnn_attention": "attention", "_scaled_dot_product_flash_attention_for_cpu": "attention",
}
_HEADLINE = {"conv", "linear", "matmul", "attention"}


def _per_output_element(*args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    shape = out_shape[0] if isinstance(out_shape, (tuple, list)) and out_shape and isinstance(
        out_shape[0], (torch.Size, tuple, list)) else out_shape
    n = 1
    for s in shape or ():
        n *= int(s)
    return 2 * n  # FlopCounterMode's unit is FLOPs (2 per MAC); halve everything uniformly later


_OTHER_OPS = [
    aten.native_batch_norm, aten._native_batch_norm_legit, aten._native_batch_norm_legit_no_training,
    aten.native_layer_norm, aten.native_group_norm, aten.avg_pool2d, aten.max_pool2d_with_indices,
    aten.adaptive_avg_pool2d, aten._adaptive_avg_pool2d, aten.mean,
]
_CUSTOM: dict[Any, Any] = {op: _per_output_element for op in _OTHER_OPS if hasattr(op, "default")}


def _sdpa_cpu(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    """Q K^T and A V of attention (torch registers no formula for the fused CPU kernel)."""
    *batch, sq, d = q
    sk, dv = k[-2], v[-1]
    n = 1
    for b in batch:
        n *= int(b)
    return 2 * n * sq * sk * (d + dv)


if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _CUSTOM[aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu


@dataclass(frozen=True)
class LayerCost:
    name: str  # module path ("" for the model itself)
    type: str  # module class name
    macs: int  # headline MACs computed directly in this module (not its children)
    other_ops: int  # normalisation / pooling / reduction ops in this module
    params: int  # parameters owned directly by this module
    kind: str  # dominant op kind: conv, linear, matmul, attention, norm/pool, or none


@dataclass(frozen=True)
class ProfileReport:
    macs: int
    params: int
    other_ops: int
    by_kind: dict[str, int]
    layers: tuple[LayerCost, ...] = field(repr=False)
    input_shapes: tuple[tuple[int, ...], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"macs": self.macs, "params": self.params, "other_ops": self.other_ops, "by_kind": dict(self.by_kind),
                "input_shapes": [list(s) for s in self.input_shapes],
                "layers": [dataclasses.asdict(r) for r in self.layers]}

    def table(self, top: int = 15) -> Any:
        from rich.table import Table

        from slimkit.report import format_count

        t = Table(title=f"MACs {format_count(self.macs)}  params {format_count(self.params)}")
        for c in ("layer", "type", "kind", "MACs", "%", "params"):
            t.add_column(c, justify="left" if c in ("layer", "type", "kind") else "right")
        for r in sorted(self.layers, key=lambda r: -r.macs)[:top]:
            share = 100.0 * r.macs / self.macs if self.macs else 0.0
            t.add_row(r.name or "(model)", r.type, r.kind, format_count(r.macs), f"{share:.1f}", format_count(r.params))
        return t


def count_params(model: nn.Module) -> int:
    """Unique parameters (a weight shared by two modules counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def make_inputs(model: nn.Module, spec: Any) -> tuple[torch.Tensor, ...]:
    """Example inputs from a shape (C,H,W) / (N,C,H,W), a tensor, or a tuple of tensors."""
    if isinstance(spec, (tuple, list)) and all(isinstance(s, int) and s > 0 for s in spec) and len(spec) in (3, 4):
        shape = tuple(spec) if len(spec) == 4 else (1, *spec)
        p = next(iter(model.parameters()), None)
        return (torch.randn(shape, dtype=p.dtype if p is not None else torch.float32,
                            device=p.device if p is not None else "cpu"),)
    return as_tensor_tuple(spec, ProfileError, also="a shape like (C, H, W) or (N, C, H, W)")


def _expected_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


class _no_grad_params:
    """No parameter requires grad while counting (restored after). Under `no_grad`, a view of a parameter (CaiT's
    and PiT's expanded class token) still requires grad but has no gradient function, and FlopCounterMode's module
    tracker fails on it ("Expected gradient function to be set")."""

    def __init__(self, model: nn.Module) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc: Any) -> None:
        for p in self.params:
            p.requires_grad_(True)


def _run_counted(model: nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, dict[Any, int]]:
    was_training = model.training
    model.eval()
    inputs = [t.detach() for t in inputs]
    try:
        with _no_grad_params(model), FlopCounterMode(display=False, custom_mapping=_CUSTOM) as fc, torch.no_grad():
            model(*inputs)
    except Exception as e:  # noqa: BLE001 - whatever the model's forward raises (timm asserts the input size)
        exp = _expected_channels(model)
        x = inputs[0] if inputs else None
        wrong = x is not None and (x.dim() != 4 or x.shape[1] != exp)
        hint = f" (its first convolution expects {exp} input channels)" if exp and wrong else ""
        shapes = [tuple(t.shape) for t in inputs]
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise ProfileError(f"{type(model).__name__} failed on input of shape {shapes}{hint} ({type(e).__name__}: "
                           f"{why}){size_hint(model, tuple(inputs))}") from None
    finally:
        model.train(was_training)
    return {k: dict(v) for k, v in fc.get_flop_counts().items()}


def _split(counts: dict[Any, int]) -> tuple[dict[str, int], int]:
    kinds: dict[str, int] = defaultdict(int)
    other = 0
    for op, flops in counts.items():
        kind = _KIND.get(getattr(op, "__name__", str(op)).split(".")[-1])
        if kind in _HEADLINE:
            kinds[kind] += flops // 2
        else:
            other += flops // 2
    return kinds, other


def profile(model: nn.Module, inputs: Any) -> ProfileReport:
    """MACs and params of `model` on `inputs` (a shape or example tensors), total, per kind and per module."""
    inputs = make_inputs(model, inputs)
    counts = _run_counted(model, inputs)
    root = type(model).__name__
    by_name = {("" if k == root else k[len(root) + 1:]): v for k, v in counts.items() if k != "Global"}
    total_kinds, total_other = _split(counts.get("Global", {}))
    rows = []
    for name, module in model.named_modules():
        own = dict(by_name.get(name, {}))
        for child, _ in module.named_children():
            for op, f in by_name.get(f"{name}.{child}" if name else child, {}).items():
                own[op] = own.get(op, 0) - f
        kinds, other = _split({op: f for op, f in own.items() if f > 0})
        params = sum(p.numel() for p in module.parameters(recurse=False))
        macs = sum(kinds.values())
        if macs or other or params:
            kind = max(kinds, key=kinds.get) if kinds else ("norm/pool" if other else "none")
            rows.append(LayerCost(name, type(module).__name__, macs, other, params, kind))
    return ProfileReport(sum(total_kinds.values()), count_params(model), total_other, dict(total_kinds), tuple(rows),
                         tuple(tuple(t.shape) for t in inputs))


def count_node_macs(gm: torch.fx.GraphModule, inputs: Sequence[torch.Tensor]) -> dict[str, int]:
    """Headline MACs of every node of a traced model, counted like `count_macs` (one forward pass; nodes without
    MACs are left out). Their sum is `count_macs` of the model the graph was traced from."""
    class _Counter(torch.fx.Interpreter):
        def __init__(self) -> None:
            super().__init__(gm)
            self.per_node: dict[str, int] = {}
            self.seen = 0

        def run_node(self, n: torch.fx.Node) -> Any:
            result = super().run_node(n)
            kinds, _ = _split(fc.get_flop_counts().get("Global", {}))
            total = sum(kinds.values())
            if total > self.seen:
                self.per_node[n.name] = total - self.seen
                self.seen = total
            return result

    modes = [(m, m.training) for m in gm.modules()]  # (shared with the model: each module's mode comes back)
    gm.eval()
    counter = _Counter()
    try:
        with _no_grad_params(gm), FlopCounterMode(display=False, custom_mapping=_CUSTOM) as fc, torch.no_grad():
            counter.run(*[t.detach() for t in inputs])
    except Exception as e:  # noqa: BLE001 - the traced graph ran during tracing: this is an engine failure
        raise ProfileError(f"counting the MACs of each traced operation of {type(gm).__name__} failed: {e}") from None
    finally:
        for m, training in modes:
            m.training = training
    return counter.per_node


def count_macs(model: nn.Module, inputs: Any) -> int:
    """Headline MACs only (conv + linear + matmul + attention) for one forward pass on `inputs`."""
    inputs = make_inputs(model, inputs)
    kinds, _ = _split(_run_counted(model, inputs).get("Global", {}))
    return sum(kinds.values())
