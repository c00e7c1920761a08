"""Parameters used directly in the forward pass along the channels: layer scale, position embeddings, class tokens.

ConvNeXt multiplies each block's output by a learned per-channel `gamma` (timm: `x * self.gamma.reshape(1, -1, 1,
1)`, torchvision: `self.layer_scale * x` with a (C, 1, 1) parameter); a ViT adds `pos_embed` (1, N, D) and
concatenates a `cls_token` (1, 1, D) along the tokens. Such a parameter is a member of the channel space it meets,
with role `param:<attribute>:<dim>` on the module that owns it: surgery slices that dimension of the attribute.

What is followed from a `get_attr` to its use: a chain of single-tensor operations that move dimensions in a way
the engine computes exactly — view-like calls (`reshape` / `view` / `flatten` when the dimensions before the tracked
one keep their product, `unsqueeze`, `squeeze`, `permute`, `transpose`, `expand`, `to`, ...), indexing (slices
covering it, ints and one index tensor elsewhere: Swin's relative-position table `table[index]`, TinyViT / LeViT's
`biases[:, idxs]`) and elementwise functions of the one tensor (`clamp`, `exp`, `sigmoid`, a product with a number:
Swin-V2's `logit_scale`, `sin` / `cos`), and elementwise products and sums of several such expressions with tensors
constant along the channels (T2T-ViT's sinusoidal code: `sin(arange(n)[:, None] * code[0]) * code[1] + ...`, every
parameter on the way a member). Anything else, and constants fx lifts out of the code (not the model's own parameters),
stays unsupported and blocks the space.
"""

from __future__ import annotations

import math
import operator
from typing import Any

import torch
from torch import fx, nn

from slimkit.graph.ops import _BuilderOps
from slimkit.graph.spaces import ChannelInfo, Member

__all__ = ["param_role", "parse_param_role"]

_KEEP_LAYOUT = {"expand", "expand_as", "to", "type_as", "contiguous", "clone", "float", "half", "detach"}
_UNARY = {"exp", "sigmoid", "clamp", "clamp_min", "clamp_max", "neg", "abs", "sqrt", "relu", "tanh", "log", "softplus",
          "mul", "div", "add", "sub", "pow", "sin", "cos"}
_UNARY_FUNCS = {torch.exp: "exp", torch.sigmoid: "sigmoid", torch.clamp: "clamp", torch.neg: "neg", torch.abs: "abs",
                torch.sqrt: "sqrt", torch.relu: "relu", torch.tanh: "tanh", torch.log: "log", operator.mul: "mul",
                operator.truediv: "div", operator.add: "add", operator.sub: "sub", operator.neg: "neg",
                torch.mul: "mul", torch.unsqueeze: "unsqueeze", torch.reshape: "reshape", torch.squeeze: "squeeze",
                torch.flatten: "flatten", torch.permute: "permute", torch.transpose: "transpose",
                operator.getitem: "getitem", nn.functional.softplus: "softplus", torch.sigmoid_: "sigmoid",
                torch.sin: "sin", torch.cos: "cos"}


def param_role(attr: str, dim: int) -> str:
    return f"param:{attr}:{dim}"


def parse_param_role(role: str) -> tuple[str, int] | None:
    """(attribute, dimension) of a `param:` role, None for any other role."""
    if not role.startswith("param:"):
        return None
    attr, _, dim = role[len("param:"):].rpartition(":")
    return attr, int(dim)


def _ints(args: Any) -> list[int]:
    out: list[int] = []
    for a in args:
        if isinstance(a, (list, tuple)):
            out += _ints(a)
        elif isinstance(a, int) and not isinstance(a, bool):
            out.append(a)
    return out


class _ParamOps(_BuilderOps):
    param_uses: dict[tuple[str, str], ChannelInfo]

    def _chain_input(self, node: fx.Node) -> tuple[str, fx.Node] | None:
        """(operation, tensor input) when `node` is a single-tensor operation the dimension tracking follows."""
        name = node.target if node.op == "call_method" else _UNARY_FUNCS.get(node.target)
        if not isinstance(name, str) or name not in _KEEP_LAYOUT | _UNARY | _MOVES:
            return None
        tensors = [a for a in node.args if isinstance(a, fx.Node) and self._shape(a) is not None]
        if name == "getitem":
            tensors = tensors[:1]
        if len(tensors) != 1 or tensors[0] is not node.args[0] and name not in ("mul", "add", "sub"):
            return None
        if name not in ("getitem", "expand", "reshape", "view", "permute", "transpose", "unsqueeze", "squeeze",
                        "flatten", "to") and any(isinstance(a, fx.Node) for a in node.kwargs.values()):
            return None
        return name, tensors[0]

    def _follow(self, op: str, node: fx.Node, src_node: fx.Node, dim: int) -> int | None:
        """Where dimension `dim` of `src_node` is in `node`'s output (None: not followed exactly)."""
        src, dst = self._shape(src_node), self._shape(node)
        if src is None or dst is None:
            return None
        if op in _KEEP_LAYOUT or op in _UNARY:  # elementwise: broadcasting aligns the last dimensions
            d = dim + len(dst) - len(src)
            return d if 0 <= d < len(dst) and dst[d] == src[dim] else None
        rest = [a for a in node.args[1:]]
        if op in ("unsqueeze", "squeeze") and (rest or "dim" in node.kwargs):
            d = rest[0] if rest else node.kwargs["dim"]
            if not isinstance(d, int):
                return None
            if op == "unsqueeze":
                return dim + (d % len(dst) <= dim)
            d %= len(src)
            return None if d == dim else dim - (d < dim)
        if op == "squeeze":
            return dim - sum(1 for k in range(dim) if src[k] == 1)
        if op in ("permute", "transpose"):
            perm = _permutation(rest, len(src), op)
            return perm.index(dim) if perm is not None else None
        if op in ("reshape", "view", "flatten"):
            lead = math.prod(src[:dim])
            return next((p for p in range(len(dst)) if math.prod(dst[:p]) == lead and dst[p] == src[dim]), None)
        if op == "getitem":
            return _index_dim(node.args[1], src, dim, self._shape)
        return None

    def _leaves(self, node: fx.Node, chain: list[tuple[str, fx.Node, fx.Node]], length: int,
                binary: dict[fx.Node, list[fx.Node]]) -> list[tuple[fx.Node, list[Any]]]:
        """(get_attr, chain from it to the use) of every parameter `node` is computed from. An elementwise op of
        several tensors (T2T-ViT's `sin(pos * code[0]) * code[1]`) branches: operands that are no parameter
        expression go to `binary`, to be checked constant along the channels; an activation operand fails."""
        while node.op != "get_attr":
            tensors = [a for a in node.args if isinstance(a, fx.Node) and self._shape(a) is not None]
            name = node.target if node.op == "call_method" else _UNARY_FUNCS.get(node.target)
            if len(tensors) > 1 and name in ("mul", "div", "add", "sub") and not node.kwargs:
                if any(isinstance(self.info.get(t), ChannelInfo) for t in tensors):
                    raise _NotParam
                found: list[tuple[fx.Node, list[Any]]] = []
                for t in tensors:
                    try:
                        sub = self._leaves(t, [(name, node, t), *chain], length, binary)
                    except _NotParam:
                        sub = []
                    found += sub
                    if not sub:
                        binary.setdefault(node, []).append(t)
                return found
            got = self._chain_input(node)
            if got is None or got[0] in ("reshape", "view") and length in _ints(node.args[1:]):
                raise _NotParam  # (a view to a fixed channel count, timm's `scale.view(self.shape)`, stays fixed)
            chain.insert(0, (got[0], node, got[1]))
            node = got[1]
        return [(node, chain)]

    def _param_sources(self, a: fx.Node, pos: int, length: int) -> list[tuple[str, str, int]] | None:
        """(owner module, attribute, dimension) of each model parameter `a` is computed from whose dimension lands
        exactly on `a`'s dimension `pos` (the channels); None when that cannot be followed exactly."""
        out = self._shape(a)
        if out is None or not 0 <= pos < len(out) or out[pos] != length or length <= 1:
            return None
        binary: dict[fx.Node, list[fx.Node]] = {}
        try:
            leaves = self._leaves(a, [], length, binary)
        except _NotParam:
            return None
        sources, at = set(), {}  # at: where the channels are in each branching op's output
        for leaf, chain in leaves:
            owner, _, attr = str(leaf.target).rpartition(".")
            mod = self.modules.get(owner)
            if mod is None or not (attr in mod._parameters or attr in mod._buffers):
                return None  # a constant fx lifted out of the code: not the model's to slice
            found = []
            for d in (d for d, n in enumerate(getattr(mod, attr).shape) if n == length):
                dim: int | None = d
                seen = {}
                for op, n, src in chain:
                    dim = self._follow(op, n, src, dim)
                    if dim is None:
                        break
                    seen[n] = dim
                if dim == pos:
                    found.append((d, seen))
            if len(found) != 1:
                return None
            sources.add((owner, attr, found[0][0]))
            at.update(found[0][1])
        for n, consts in binary.items():  # operands that are no parameter must not vary along the channels
            shape = self._shape(n)
            for t in consts:
                ts = self._shape(t)
                if n not in at or ts is None or shape is None:
                    return None
                p = at[n] - (len(shape) - len(ts))
                if 0 <= p < len(ts) and ts[p] != 1:
                    return None
        return sorted(sources) or None

    def _add_param_member(self, a: fx.Node, x: ChannelInfo, out_nd: int, node: fx.Node) -> bool:
        """Make the parameter behind operand `a` a member of x's channels; False when it cannot be followed."""
        shape = self._shape(a)
        if shape is None:
            return False
        sources = self._param_sources(a, x.dim - (out_nd - len(shape)), x.length)
        if sources is None:
            return False
        for owner, attr, dim in sources:
            role = param_role(attr, dim)
            first = self.param_uses.get((owner, role))
            if first is not None:  # the same parameter used twice: both uses see the same channels
                self._merge_simple(first, x, node)
                continue
            self.param_uses[(owner, role)] = x
            for s, o in zip(x.segments, x.offsets(), strict=True):
                self.spaces.add(s.space, Member(owner, role, o, s.repeat))
        return True


class _NotParam(Exception):
    """Raised inside the walk from a use back to parameters: this operand is not a parameter expression."""


_MOVES = {"unsqueeze", "squeeze", "permute", "transpose", "reshape", "view", "flatten", "getitem"}


def _permutation(rest: list[Any], nd: int, op: str) -> list[int] | None:
    if op == "transpose":
        if len(rest) < 2 or not all(isinstance(d, int) for d in rest[:2]):
            return None
        a, b = rest[0] % nd, rest[1] % nd
        perm = list(range(nd))
        perm[a], perm[b] = perm[b], perm[a]
        return perm
    dims = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
    return [d % nd for d in dims] if all(isinstance(d, int) for d in dims) and len(dims) == nd else None


def _index_dim(index: Any, src: tuple[int, ...], dim: int, shape_of: Any) -> int | None:
    """Where dimension `dim` lands after `x[index]`: it must be kept whole (a full slice or not indexed); ints drop
    dimensions, None adds one, a single index tensor puts its own dimensions in place of the one it indexes."""
    idx = index if isinstance(index, tuple) else (index,)
    tensors = [i for i in idx if isinstance(i, fx.Node) and shape_of(i) is not None]
    if len(tensors) > 1:
        return None
    used = sum(i is not None and i is not Ellipsis for i in idx)
    s_dim = o_dim = 0
    for i in idx:
        if i is Ellipsis:
            skip = len(src) - used
            if s_dim <= dim < s_dim + skip:
                return o_dim + dim - s_dim
            s_dim, o_dim = s_dim + skip, o_dim + skip
        elif i is None:
            o_dim += 1
        elif s_dim == dim:
            full = isinstance(i, slice) and i.start in (None, 0) and i.step in (None, 1) and (
                i.stop is None or (isinstance(i.stop, int) and i.stop >= src[dim]))
            return o_dim if full else None
        elif isinstance(i, fx.Node) and shape_of(i) is not None:
            s_dim, o_dim = s_dim + 1, o_dim + len(shape_of(i))
        else:
            s_dim, o_dim = s_dim + 1, o_dim + (1 if isinstance(i, slice) else 0)
    return o_dim + dim - s_dim
