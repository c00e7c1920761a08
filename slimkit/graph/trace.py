"""Trace a model with torch.fx and record every node's output shape (read-only: the model is not changed).

Control flow on sizes (`if H == self.window_size:` in TinyViT, EfficientViT, MobileViT) is decided by the example
input: when plain symbolic tracing fails, the model is traced again with every value also computed on the example
inputs, and a branch on a Python number, bool or device (never on a tensor's values) follows the example's path.
The analysis is then valid for inputs of the example's size (as the MACs budget is).

Sub-modules torch.fx cannot trace (data-dependent control flow, unsupported Python) are kept whole: the tracer
finds the smallest failing sub-modules and records them as single opaque nodes, so the rest of the model is still
analysed; the dependency graph then blocks every channel that enters or leaves them (never pruned, never guessed).
Only a failure in the top-level forward itself is an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from slimkit.errors import GraphError
from slimkit.graph.rules import declared_rule
from slimkit.layers.dynamic import DynamicConv2d

__all__ = ["trace", "untraceable_modules", "empty_caches", "LEAF_TYPES"]


# Subclasses of these (timm's BatchNormAct2d, LayerNorm2d, Conv2dSame, ...) stay single nodes: their parameters
# are sliced like their base class's, whatever their forward adds around them (activation, padding, permutes).
LEAF_TYPES: tuple[type, ...] = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                                nn.PReLU, DynamicConv2d)


class _Tracer(fx.Tracer):
    def __init__(self, opaque: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.opaque = opaque

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (isinstance(m, LEAF_TYPES) or qualname in self.opaque or declared_rule(m) is not None
                or super().is_leaf_module(m, qualname))


@contextlib.contextmanager
def _untraced_modules() -> Iterator[None]:
    """Module calls made for an example value must run, not be recorded: fx's patch of nn.Module is lifted."""
    from torch.fx import _symbolic_trace as st

    call, getattr_ = nn.Module.__call__, nn.Module.__getattr__
    nn.Module.__call__, nn.Module.__getattr__ = st._orig_module_call, st._orig_module_getattr  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.__call__, nn.Module.__getattr__ = call, getattr_  # type: ignore[method-assign]


class _ConcreteProxy(fx.Proxy):
    _KNOWN = frozenset({"device", "dtype", "is_cuda", "layout", "is_sparse", "requires_grad"})

    def __getattr__(self, k: str) -> Any:
        values = self.tracer.values  # type: ignore[attr-defined]
        if k in self._KNOWN and isinstance(values.get(self.node), torch.Tensor):
            return getattr(values[self.node], k)  # a property of the example tensor, not a traced value
        return super().__getattr__(k)

    def __len__(self) -> int:
        value = self.tracer.value(self.node)  # type: ignore[attr-defined]
        if isinstance(value, (tuple, list, torch.Size, torch.Tensor)):
            return len(value)
        return super().__len__()


class _ConcreteTracer(_Tracer):
    """Symbolic tracing that also runs every recorded call on the example inputs, so control flow on sizes can be
    decided (see the module docstring)."""

    def __init__(self, inputs: tuple[Any, ...], opaque: frozenset[str] = frozenset()) -> None:
        super().__init__(opaque)
        self.inputs = list(inputs)
        self.values: dict[fx.Node, Any] = {}

    def proxy(self, node: fx.Node) -> fx.Proxy:
        return _ConcreteProxy(node, self)

    def value(self, node: fx.Node) -> Any:
        if node not in self.values and node.op == "get_attr":
            obj: Any = self.root
            with _untraced_modules():
                for part in str(node.target).split("."):
                    obj = getattr(obj, part)
            self.values[node] = obj
        if node not in self.values:
            raise fx.proxy.TraceError(f"no example value for {node.name}")
        return self.values[node]

    def create_proxy(self, kind: str, target: Any, args: tuple[Any, ...], kwargs: dict[str, Any], *rest: Any,
                     **kw: Any) -> fx.Proxy:
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **kw)
        node = proxy.node
        try:
            self.values[node] = self._run(node)
        except Exception:  # noqa: BLE001 - the value is only needed if control flow asks for it
            pass
        return proxy

    def _run(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            return self.inputs.pop(0) if self.inputs else (node.args[0] if node.args else None)
        if node.op == "get_attr":
            return self.value(node)
        args = fx.node.map_arg(node.args, self.value)
        kwargs = fx.node.map_arg(node.kwargs, self.value)
        with torch.no_grad(), _untraced_modules():
            if node.op == "call_function":
                return node.target(*args, **kwargs)
            if node.op == "call_method":
                return getattr(args[0], node.target)(*args[1:], **kwargs)
            if node.op == "call_module":
                return self.root.get_submodule(node.target)(*args, **kwargs)
        return None

    def to_bool(self, obj: fx.Proxy) -> bool:
        value = self.value(obj.node) if obj.node in self.values else None
        if isinstance(value, (bool, int, float, str, torch.device, torch.dtype)):
            return bool(value)
        return super().to_bool(obj)

    def iter(self, obj: fx.Proxy) -> Iterator[Any]:
        value = self.values.get(obj.node)
        if isinstance(value, (tuple, list, torch.Size)):
            return iter([obj[i] for i in range(len(value))])
        return super().iter(obj)


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


@contextlib.contextmanager
def empty_caches(model: nn.Module) -> Iterator[None]:
    """Tensor caches kept in dict attributes (timm's LeViT / TinyViT attention-bias cache) are emptied while
    tracing, so the trace records how the values are computed and never stores a tracer proxy in the model;
    the model's own dicts are put back afterwards, untouched."""
    saved = []
    for m in model.modules():
        for k, v in vars(m).items():
            if isinstance(v, dict) and v and not k.startswith("_") and all(
                    isinstance(t, torch.Tensor) for t in v.values()):
                saved.append((m, k, v))
    for m, k, _ in saved:
        setattr(m, k, {})
    try:
        yield
    finally:
        for m, k, v in saved:
            setattr(m, k, v)


def trace(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """A GraphModule sharing `model`'s submodules, with `node.meta['tensor_meta']` shapes filled in; sub-modules
    fx cannot trace appear as opaque call_module nodes (listed in `gm.meta['opaque_modules']`)."""
    with empty_caches(model):
        return _trace(model, example_inputs)


def _concrete(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], opaque: frozenset[str]) -> fx.Graph:
    was = model.training
    model.eval()  # the example run must not update statistics
    try:
        return _ConcreteTracer(example_inputs, opaque).trace(model)
    finally:
        model.train(was)


def _trace(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    opaque: list[str] = []
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model), type(model).__name__)
    except Exception as e:  # noqa: BLE001 - fx raises many types; all mean the same thing to the user
        msg = str(e).splitlines()[0][:300]
        try:
            gm = fx.GraphModule(model, _concrete(model, example_inputs, frozenset()), type(model).__name__)
        except Exception:  # noqa: BLE001
            gm = None
        try:
            if gm is None:
                opaque = untraceable_modules(model)
                try:
                    graph = _concrete(model, example_inputs, frozenset(opaque))
                except Exception:  # noqa: BLE001
                    graph = _Tracer(frozenset(opaque)).trace(model)
                gm = fx.GraphModule(model, graph, type(model).__name__)
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
