"""Trace a model with torch.fx and record every node's output shape (read-only: the model is not changed).

Sub-modules torch.fx cannot trace (data-dependent control flow, unsupported Python) are kept whole: the tracer
finds the smallest failing sub-modules and records them as single opaque nodes, so the rest of the model is still
analysed; the dependency graph then blocks every channel that enters or leaves them (never pruned, never guessed).
Only a failure in the top-level forward itself is an error.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from slimkit.errors import GraphError
from slimkit.layers.dynamic import DynamicConv2d

__all__ = ["trace", "untraceable_modules", "LEAF_TYPES"]


# Subclasses of these (timm's BatchNormAct2d, LayerNorm2d, Conv2dSame, ...) stay single nodes: their parameters
# are sliced like their base class's, whatever their forward adds around them (activation, padding, permutes).
LEAF_TYPES: tuple[type, ...] = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                                nn.PReLU, DynamicConv2d)


class _Tracer(fx.Tracer):
    def __init__(self, opaque: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.opaque = opaque

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAF_TYPES) or qualname in self.opaque or super().is_leaf_module(m, qualname)


def _traces(module: nn.Module, opaque: frozenset[str], prefix: str) -> bool:
    local = frozenset(n[len(prefix):] for n in opaque if n.startswith(prefix))
    try:
        _Tracer(local).trace(module)
    except Exception:  # noqa: BLE001 - any failure means "not traceable as is"
        return False
    return True


def untraceable_modules(model: nn.Module) -> list[str]:
    """Names of the smallest sub-modules that torch.fx cannot trace (empty if the whole model traces).

    Raises GraphError if the model's own forward (outside any sub-module) cannot be traced.
    """
    opaque: set[str] = set()

    def visit(module: nn.Module, name: str) -> None:
        if _traces(module, frozenset(opaque), f"{name}." if name else ""):
            return
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, LEAF_TYPES) and not _traces(child, frozenset(opaque), f"{full}."):
                visit(child, full)
        if name and not _traces(module, frozenset(opaque), f"{name}."):
            opaque.add(name)  # its own forward fails: keep it whole

    visit(model, "")
    if not _traces(model, frozenset(opaque), ""):
        raise GraphError("top-level forward")
    return sorted(opaque)


def trace(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """A GraphModule sharing `model`'s submodules, with `node.meta['tensor_meta']` shapes filled in; sub-modules
    fx cannot trace appear as opaque call_module nodes (listed in `gm.meta['opaque_modules']`)."""
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
        opaque: list[str] = []
    except Exception as e:  # noqa: BLE001 - fx raises many types; all mean the same thing to the user
        msg = str(e).splitlines()[0][:300]
        try:
            opaque = untraceable_modules(model)
            gm = fx.GraphModule(model, _Tracer(frozenset(opaque)).trace(model), type(model).__name__)
        except Exception:  # noqa: BLE001
            raise GraphError(
                f"torch.fx cannot trace {type(model).__name__}: {msg}. Data-dependent Python control flow (if/for on "
                "tensor values or shapes) in the model's own forward blocks tracing; rewrite that part without it, "
                "or prune a sub-module that traces and list the rest in ignored_layers"
            ) from None
    gm.meta["opaque_modules"] = opaque
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as e:  # noqa: BLE001
        raise GraphError(f"running the traced {type(model).__name__} on the example inputs failed: {e}") from None
    finally:
        model.train(was)
    return gm
