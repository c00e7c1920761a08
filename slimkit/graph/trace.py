"""Trace a model with torch.fx and record every node's output shape (read-only: the model is not changed).

Control flow on sizes (`if H == self.window_size:` in TinyViT, EfficientViT, MobileViT) is decided by the example
input: when plain symbolic tracing fails, the model is traced again with every value also computed on the example
inputs, and a branch on a Python number, bool or device (never on a tensor's values) follows the example's path.
The analysis is then valid for inputs of the example's size (as the MACs budget is).

Code torch.fx cannot trace even so (data-dependent control flow, unsupported Python) is kept whole, at the smallest
unit that works: a module-level helper function that fails (timm's `scale_image`, Nest's `deblockify`) becomes a
single opaque call (found from the failure's traceback, plus the functions timm registers as not traceable); a
sub-module whose own forward fails becomes a single opaque node (the tracer finds the smallest such sub-modules).
The rest of the model is still analysed; the dependency graph blocks every channel that enters or leaves an opaque
part (never pruned, never guessed). Optional forward arguments the example inputs do not give (`mask=None`) are
traced at their default. Only a failure in the top-level forward itself is an error."""

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
from slimkit.graph.rules import conv_types, declared_rule

__all__ = ["trace", "untraceable_modules", "empty_caches", "LEAF_TYPES"]


# Subclasses of these (timm's BatchNormAct2d, LayerNorm2d, Conv2dSame, ...) stay single nodes: their parameters
# are sliced like their base class's, whatever their forward adds around them (activation, padding, permutes).
# Classes registered with a channel rule (slimkit.registry.CHANNEL_RULES) stay single nodes too.
LEAF_TYPES: tuple[type, ...] = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm,
                                nn.PReLU)


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


def _trace_root(model: nn.Module, opaque: frozenset[str], functions: tuple[Any, ...], given: int | None,
                inputs: tuple[Any, ...] | None = None, wrap_failing: bool = True) -> tuple[fx.Graph, tuple[Any, ...]]:
    """Trace (on the example `inputs` too when given), with `functions` as opaque calls and, if `wrap_failing`, each
    further helper function that fails wrapped and retried; the graph and the functions wrapped. Raises the last
    failure when it is not in such a function."""
    modes = [(m, m.training) for m in model.modules()]
    if inputs is not None:
        model.eval()  # the example run must not update statistics
    try:
        for _ in range(16):
            try:
                tracer = _Tracer(opaque) if inputs is None else _ConcreteTracer(inputs, opaque)
                with _wrapped(model, functions):
                    graph = tracer.trace(model, concrete_args=_defaults(model, given) or None)
                return graph, functions
            except Exception as e:  # noqa: BLE001 - any failure means "not traceable as is"
                fn = _failing_function(e)
                if not wrap_failing or fn is None or fn in functions:
                    raise
                functions = (*functions, fn)
        raise GraphError(f"tracing {type(model).__name__} kept failing in helper functions")
    finally:
        for m, training in modes:
            m.training = training


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
            leaf = isinstance(child, (*LEAF_TYPES, *conv_types()))
            if not leaf and not _traces(child, frozenset(opaque), f"{full}.", functions):
                visit(child, full)
        if name and not _traces(module, frozenset(opaque), f"{name}.", functions):
            opaque.add(name)  # its own forward fails: keep it whole

    visit(model, "")
    if not _traces(model, frozenset(opaque), "", functions):
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
    fx cannot trace appear as opaque call_module nodes (listed in `gm.meta['opaque_modules']`), helper functions
    as opaque calls (`gm.meta['opaque_functions']`)."""
    with empty_caches(model):
        return _trace(model, example_inputs)


def _first(*attempts: Any) -> tuple[fx.Graph, tuple[Any, ...]] | None:
    for attempt in attempts:
        try:
            return attempt()
        except Exception:  # noqa: BLE001 - the next, coarser way is tried
            continue
    return None


def _trace(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> fx.GraphModule:
    given, x = len(example_inputs), tuple(example_inputs)
    opaque: list[str] = []
    # whole, then deciding size control flow on the example, then with helper functions (timm's registered ones and
    # those that fail) as opaque calls
    try:
        graph, functions = _trace_root(model, frozenset(), (), given, wrap_failing=False)
    except Exception as e:  # noqa: BLE001 - fx raises many types; all mean the same thing to the user
        msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        notrace = _registered_notrace()
        got = _first(lambda: _trace_root(model, frozenset(), (), given, x, wrap_failing=False),
                     lambda: _trace_root(model, frozenset(), notrace, given))
        try:
            if got is None:
                opaque = untraceable_modules(model, notrace)
                got = _first(lambda: _trace_root(model, frozenset(opaque), notrace, given, x),
                             lambda: _trace_root(model, frozenset(opaque), notrace, given))
            if got is None:
                raise GraphError("no trace")
        except Exception:  # noqa: BLE001
            raise GraphError(
                f"torch.fx cannot trace {type(model).__name__}: {msg}. Data-dependent Python control flow (if/for on "
                "tensor values or shapes) in the model's own forward blocks tracing; rewrite that part without it, "
                "or prune a sub-module that traces and list the rest in ignored_layers"
            ) from None
        graph, functions = got
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
