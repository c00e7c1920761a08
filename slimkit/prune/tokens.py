"""Token reduction as surgery: insert token reducers (`slimkit.layers.token_reduction`) between transformer blocks.

`find_token_stack` finds the model's sequence of blocks over N x T x C tokens (the longest `nn.Sequential` /
`nn.ModuleList` whose children all map an N x T x C tensor to one of the same shape, as timm's ViT / DeiT `blocks`
and slimkit's T2T-ViT `blocks`) by running the example input once with hooks. Windowed and hierarchical models keep
their token grid (their attention needs it): they have no such stack and are pruned along heads and channels only.

`insert_token_reducers` (mutates the model, like all surgery) puts a reducer after chosen blocks, under a new key
(`blocks.tokens3` after `blocks.3`) so every existing module keeps its name and its weights. A reducer keeps a
fixed share of the patch tokens that reach it (the class / prefix tokens always stay, first), so shapes stay
static. Methods: "select" (fixed positions ranked by HSIC between each position's hidden state in the unreduced
model and the labels on calibration data, `slimkit.prune.hsic`; each reducer keeps the best of the positions still
present), "drop" (per image, by class-token attention, EViT) and "merge" (ToMe).

The pruning record stores a reducer step as {"kind": "tokens", "container": ..., "reducers": [...]}; `replay`
inserts the same modules (select: the same positions).
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slimkit.errors import ConfigError, PruneError
from slimkit.inputs import as_tensor_tuple
from slimkit.layers.token_reduction import TokenDrop, TokenMerge, TokenSelect
from slimkit.prune.hsic import MAX_SAMPLES, hsic_scores, run_calibration

__all__ = ["TokenStack", "TOKEN_METHODS", "check_token_method", "check_token_layers", "default_token_layers",
           "find_token_stack", "insert_token_reducers", "reduce_tokens", "token_position_scores", "token_stack_or_why",
           "token_step"]

TOKEN_METHODS = ("select", "drop", "merge")
_NO_STACK = "has no stack of blocks over N x T x C tokens"


@dataclass(frozen=True)
class TokenStack:
    container: str  # qualified name of the Sequential / ModuleList holding the blocks
    blocks: tuple[str, ...]  # its child keys, in order
    tokens: int  # tokens entering the stack (prefix + patches)
    num_prefix: int  # class / distillation / register tokens, never reduced


def _num_prefix(model: nn.Module) -> int:
    n = getattr(model, "num_prefix_tokens", None)
    if isinstance(n, int):
        return n
    return sum(isinstance(getattr(model, a, None), torch.Tensor) for a in ("cls_token", "dist_token"))


def find_token_stack(model: nn.Module, example_inputs: Any, num_prefix: int | None = None) -> TokenStack:
    """The model's stack of blocks over N x T x C tokens (read-only: hooks are removed, the model is unchanged)."""
    inputs = as_tensor_tuple(example_inputs)
    calls: dict[str, list[tuple[tuple, tuple]]] = {}
    containers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Sequential, nn.ModuleList))
                  and len(m) >= 2}

    def hook(name: str):
        def record(_m: nn.Module, args: tuple, out: Any) -> None:
            if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                calls.setdefault(name, []).append((tuple(args[0].shape), tuple(out.shape)))
        return record

    handles = [child.register_forward_hook(hook(f"{cn}.{k}")) for cn, c in containers.items()
               for k, child in c._modules.items() if child is not None]
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was)
    best: TokenStack | None = None
    for cn, c in containers.items():
        keys = tuple(k for k, child in c._modules.items() if child is not None)
        shapes = [calls.get(f"{cn}.{k}") for k in keys]
        if not all(s is not None and len(s) == 1 and len(s[0][0]) == 3 and s[0][0] == s[0][1] for s in shapes):
            continue
        if best is None or len(keys) > len(best.blocks):
            best = TokenStack(cn, keys, shapes[0][0][0][1], _num_prefix(model) if num_prefix is None else num_prefix)
    if best is None:
        raise PruneError(f"{type(model).__name__} {_NO_STACK}, so its sequence cannot be shortened: token reduction "
                         "applies to plain ViT-style models (windowed and hierarchical ones keep their token grid); "
                         "prune heads and channels instead")
    return best


def token_stack_or_why(model: nn.Module, example_inputs: Any) -> tuple[TokenStack | None, str]:
    """The model's token stack when its sequence can be shortened, else None and why not, in words ("it has no
    stack ...", "it sees 1 patch token ..."), for a message naming the dimensions it does have."""
    try:
        stack = find_token_stack(model, example_inputs)
    except PruneError:
        return None, f"it {_NO_STACK}: windowed and hierarchical models keep their token grid"
    patches = stack.tokens - stack.num_prefix
    if patches < 2:
        return None, (f"it sees {patches} patch token{'s' if patches != 1 else ''} at this input size, so none can "
                      "be removed: give larger inputs, e.g. 224 x 224")
    return stack, ""


def check_token_method(method: Any) -> None:
    """`method` is one of `TOKEN_METHODS` (a ConfigError naming them otherwise)."""
    if method not in TOKEN_METHODS:
        detail = f"must be one of {', '.join(TOKEN_METHODS)}, got {method!r}"
        raise ConfigError.for_option("token_method", detail)


def check_token_layers(stack: TokenStack, layers: Sequence[int]) -> None:
    """Reducers go after blocks of the stack: every index is one of its blocks (0 .. depth - 1)."""
    if isinstance(layers, (str, bytes)) or any(isinstance(i, bool) or not isinstance(i, numbers.Integral)
                                               or not 0 <= i < len(stack.blocks) for i in layers):
        n = len(stack.blocks)
        detail = f"{list(layers)} must index the {n} blocks of {stack.container!r} (0 .. {n - 1}): a reducer goes " \
                 "after each"
        raise ConfigError.for_option("token_layers", detail)


def default_token_layers(depth: int) -> tuple[int, ...]:
    """Reducers after the blocks at a quarter, half and three quarters of the depth (EViT's 4 / 7 / 10 of 12)."""
    return tuple(sorted({max(0, min(depth - 2, round(depth * f) - 1)) for f in (0.25, 0.5, 0.75)}))


def _container(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name) if name else model


def _make(spec: dict[str, Any]) -> nn.Module:
    kind = spec["method"]
    check_token_method(kind)  # a record naming no known method
    if kind == "select":
        return TokenSelect(spec["index"], spec["num_prefix"])
    if kind == "drop":
        return TokenDrop(spec["keep"], spec["num_prefix"], spec.get("fuse", True))
    return TokenMerge(spec["r"], spec["num_prefix"])


def insert_token_reducers(model: nn.Module, step: dict[str, Any]) -> nn.Module:
    """Insert the reducers of a record step into `model` (in place: this mutates the model) and return it."""
    container = _container(model, step["container"])
    for spec in step["reducers"]:
        after = str(spec["after"])
        if after not in container._modules:
            raise PruneError(f"token step names block {after!r}, which {step['container'] or 'the model'} lacks")
        items = list(container._modules.items())
        i = [k for k, _ in items].index(after)
        container._modules = OrderedDict(items[: i + 1] + [(f"tokens{after}", _make(spec))] + items[i + 1:])
    return model


def _hidden(model: nn.Module, module: nn.Module, data: Iterable[Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Output of `module` (n x T x C) and the labels over the calibration batches (at most MAX_SAMPLES images)."""
    outs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _m, _a, out: outs.append(out.detach()))
    labels = run_calibration(model, data, [handle])
    return torch.cat(outs)[:MAX_SAMPLES], labels


def token_position_scores(model: nn.Module, stack: TokenStack, layers: Sequence[int],
                          data: Iterable[Any] | None) -> dict[int, torch.Tensor]:
    """HSIC between each patch position's hidden state (after block `layers[i]` of the unreduced model) and the
    labels, per layer: the ranking "select" keeps positions by (computed once, reused for every ratio)."""
    if data is None:
        raise PruneError("token selection ranks positions on labelled calibration data: pass data=[(x, y), ...] "
                         "or use the token method 'drop' / 'merge'")
    container = _container(model, stack.container)
    out = {}
    for i in sorted(set(layers)):
        hidden, labels = _hidden(model, container._modules[stack.blocks[i]], data)
        out[i] = hsic_scores(hidden[:, stack.num_prefix:], labels)
    return out


def token_step(stack: TokenStack, ratio: float, layers: Sequence[int] | None = None, method: str = "select",
               scores: dict[int, torch.Tensor] | None = None) -> dict[str, Any]:
    """The record step that removes `ratio` of the patch tokens reaching each reducer, after `layers` (indices
    into the stack's blocks; default: `default_token_layers`). "select" keeps, at each reducer, the positions
    still present with the highest `scores` (`token_position_scores`)."""
    check_token_method(method)
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"token ratio is the share of tokens to remove at each reducer, in [0, 1); got {ratio}")
    layers = tuple(default_token_layers(len(stack.blocks)) if layers is None else layers)
    check_token_layers(stack, layers)
    step: dict[str, Any] = {"kind": "tokens", "container": stack.container, "reducers": []}
    patches = stack.tokens - stack.num_prefix
    alive = list(range(patches))  # original positions still in the sequence ("select")
    for i in sorted(set(layers)):
        keep = max(1, patches - int(round(ratio * patches)))
        if keep >= patches:
            continue
        spec: dict[str, Any] = {"after": stack.blocks[i], "method": method, "num_prefix": stack.num_prefix}
        if method == "select":
            if scores is None or i not in scores:
                raise PruneError(f"token selection after block {stack.blocks[i]!r} needs position scores "
                                 "(token_position_scores)")
            ranked = torch.argsort(scores[i][alive], descending=True)[:keep]
            spec["index"] = sorted(ranked.tolist())
            alive = [alive[j] for j in spec["index"]]
        elif method == "drop":
            spec["keep"] = keep
        else:
            spec["r"] = min(patches - keep, (patches + 1) // 2)
            keep = patches - spec["r"]
        step["reducers"].append(spec)
        patches = keep + (1 if method == "drop" and spec.get("fuse", True) else 0)
    return step


def reduce_tokens(model: nn.Module, example_inputs: Any, ratio: float, *, layers: Sequence[int] | None = None,
                  method: str = "select", data: Iterable[Any] | None = None,
                  num_prefix: int | None = None) -> nn.Module:
    """A copy of `model` with token reducers removing `ratio` of the patch tokens after `layers` (the original is
    not changed); its pruning record grows by the token step."""
    import copy

    stack = find_token_stack(model, example_inputs, num_prefix)
    layers = tuple(default_token_layers(len(stack.blocks)) if layers is None else layers)
    scores = token_position_scores(model, stack, layers, data) if method == "select" else None
    step = token_step(stack, ratio, layers, method, scores)
    out = insert_token_reducers(copy.deepcopy(model), step)
    from slimkit.prune.record import next_record, record_of, with_record

    info = {k: v for k, v in (record_of(model) or {}).items() if k not in ("model", "version", "rewrites", "steps")}
    return with_record(out, next_record(model, step, **info))
