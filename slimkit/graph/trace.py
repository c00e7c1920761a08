"""Trace a model with torch.fx and record every node's output shape (read-only: the model is not changed)."""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from slimkit.errors import GraphError

__all__ = ["trace", "LEAF_TYPES"]


# Subclasses of these (timm's BatchNormAct2d, LayerNorm2d, Conv2dSame, ...) stay single nodes: their parameters
# are sliced like their base class's, whatever their forward adds around them (activation, padding, permutes).
LEAF_TYPES: tuple[type, ...] = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                                nn.PReLU)


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAF_TYPES) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """A GraphModule sharing `model`'s submodules, with `node.meta['tensor_meta']` shapes filled in."""
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
    except Exception as e:  # noqa: BLE001 - fx raises many types; all mean the same thing to the user
        msg = str(e).splitlines()[0][:300]
        raise GraphError(
            f"torch.fx cannot trace {type(model).__name__}: {msg}. Data-dependent Python control flow (if/for on "
            "tensor values or shapes) blocks tracing; rewrite that part without it, or prune a sub-module that traces "
            "and list the rest in ignored_layers"
        ) from None
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
