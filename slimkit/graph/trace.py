"""Trace a model with torch.fx and record every node's output shape (read-only: the model is not changed).

Code torch.fx cannot trace (data-dependent control flow, unsupported Python) is kept whole, at the smallest unit
that works: a module-level helper function that fails (timm's `scale_image`, Nest's `deblockify`) becomes a single
opaque call (found from the failure's traceback, plus the functions timm registers as not traceable); a sub-module
whose own forward fails becomes a single opaque node (the tracer finds the smallest such sub-modules). The rest of
the model is still analysed; the dependency graph blocks every channel that enters or leaves an opaque part (never
pruned, never guessed). Optional forward arguments the example inputs do not give (`mask=None`) are traced at their
default. Only a failure in the top-level forward itself is an error.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import sys
import types
from collections.abc import Iterator
from typing import Any

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


def _defaults(module: nn.Module, given: int | None) -> dict[str, Any]:
    """Forward parameters after the first `given` (all but the first when None) that have a default: traced at it."""
    try:
        params = list(inspect.signature(module.forward).parameters.values())
    except (TypeError, ValueError):
        return {}
    start = 1 if given is None else given
    return {p.name: p.default for p in params[start:] if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _registered_notrace() -> tuple[Any, ...]:
    """Functions timm registers as not traceable (`timm.layers.get_notrace_functions`), when timm is loaded."""
    layers = sys.modules.get("timm.layers")
    get = getattr(layers, "get_notrace_functions", None)
    return tuple(f for f in get() if isinstance(f, types.FunctionType)) if get else ()


def _failing_function(err: BaseException) -> Any:
    """The innermost plain module-level Python function (outside torch) in the traceback of a tracing failure."""
    tb, found = err.__traceback__, None
    while tb is not None:
        code, glb = tb.tb_frame.f_code, tb.tb_frame.f_globals
        fn = glb.get(code.co_name)
        if (isinstance(fn, types.FunctionType) and fn.__code__ is code
                and not str(glb.get("__name__", "")).startswith("torch")):
            found = fn
        tb = tb.tb_next
    return found


def _opaque_call(fn: Any) -> Any:
    """`fn` recorded as one call_function node when called on traced values (what `torch.fx.wrap` does, for any
    function name: fx's own autowrap skips names starting with an underscore)."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        found: list[fx.Proxy] = []
        fx.node.map_aggregate((args, kwargs), lambda a: found.append(a) if isinstance(a, fx.Proxy) else None)
        if found:
            return found[0].tracer.create_proxy("call_function", fn, args, kwargs)
        return fn(*args, **kwargs)

    return wrapped


@contextlib.contextmanager
def _wrapped(model: nn.Module, functions: tuple[Any, ...]) -> Iterator[None]:
    """While tracing, every global name bound to one of `functions` in the function's own module and in the
    modules defining the model's classes calls it as one opaque node."""
    spaces = {id(f.__globals__): f.__globals__ for f in functions}
    for m in model.modules():
        mod = sys.modules.get(type(m).__module__)
        if mod is not None:
            spaces.setdefault(id(vars(mod)), vars(mod))
    ids = {id(f) for f in functions}
    saved = [(g, name, value) for g in spaces.values() for name, value in list(g.items()) if id(value) in ids]
    try:
        for g, name, value in saved:
            g[name] = _opaque_call(value)
        yield
    finally:
        for g, name, value in saved:
            g[name] = value


def _trace_root(model: nn.Module, opaque: frozenset[str], functions: tuple[Any, ...], given: int | None
                ) -> tuple[fx.Graph, tuple[Any, ...]]:
    """Trace, wrapping each helper function that fails as an opaque call and retrying; the graph and the functions
    wrapped. Raises the last failure when it is not in such a function."""
    for _ in range(16):
        try:
            with _wrapped(model, functions):
                graph = _Tracer(opaque).trace(model, concrete_args=_defaults(model, given) or None)
            return graph, functions
        except Exception as e:  # noqa: BLE001 - any failure means "not traceable as is"
            fn = _failing_function(e)
            if fn is None or fn in functions:
                raise
            functions = (*functions, fn)
    raise GraphError(f"tracing {type(model).__name__} kept failing in helper functions")


def _traces(module: nn.Module, opaque: frozenset[str], prefix: str, functions: tuple[Any, ...]) -> bool:
    local = frozenset(n[len(prefix):] for n in opaque if n.startswith(prefix))
    try:
        _trace_root(module, local, functions, None)
    except Exception:  # noqa: BLE001 - any failure means "not traceable as is"
        return False
    return True


def untraceable_modules(model: nn.Module, functions: tuple[Any, ...] = ()) -> list[str]:
    """Names of the smallest sub-modules that torch.fx cannot trace (empty if the whole model traces).

    Raises GraphError if the model's own forward (outside any sub-module) cannot be traced.
    """
    opaque: set[str] = set()

    def visit(module: nn.Module, name: str) -> None:
        if _traces(module, frozenset(opaque), f"{name}." if name else "", functions):
            return
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, LEAF_TYPES) and not _traces(child, frozenset(opaque), f"{full}.", functions):
                visit(child, full)
        if name and not _traces(module, frozenset(opaque), f"{name}.", functions):
            opaque.add(name)  # its own forward fails: keep it whole

    visit(model, "")
    if not _traces(model, frozenset(opaque), "", functions):
        raise GraphError("top-level forward")
    return sorted(opaque)


def trace(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """A GraphModule sharing `model`'s submodules, with `node.meta['tensor_meta']` shapes filled in; sub-modules
    fx cannot trace appear as opaque call_module nodes (listed in `gm.meta['opaque_modules']`), helper functions
    as opaque calls (`gm.meta['opaque_functions']`)."""
    given = len(example_inputs)
    functions = _registered_notrace()
    try:
        graph, functions = _trace_root(model, frozenset(), functions, given)
        opaque: list[str] = []
    except Exception as e:  # noqa: BLE001 - fx raises many types; all mean the same thing to the user
        msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        try:
            opaque = untraceable_modules(model, functions)
            graph, functions = _trace_root(model, frozenset(opaque), functions, given)
        except Exception:  # noqa: BLE001
            raise GraphError(
                f"torch.fx cannot trace {type(model).__name__}: {msg}. Data-dependent Python control flow (if/for on "
                "tensor values or shapes) in the model's own forward blocks tracing; rewrite that part without it, "
                "or prune a sub-module that traces and list the rest in ignored_layers"
            ) from None
    gm = fx.GraphModule(model, graph, type(model).__name__)
    gm.meta["opaque_modules"] = opaque
    gm.meta["opaque_functions"] = [getattr(f, "__qualname__", str(f)) for f in functions]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(*example_inputs)
    except Exception as e:  # noqa: BLE001
        raise GraphError(f"running the traced {type(model).__name__} on the example inputs failed: {e}") from None
    finally:
        for m, training in modes:  # each module's own mode comes back (a frozen BatchNorm stays in eval)
            m.training = training
    return gm
