"""Parameters used directly in the forward pass along the channels: layer scale, position embeddings, class tokens.

ConvNeXt multiplies each block's output by a learned per-channel `gamma` (timm: `x * self.gamma.reshape(1, -1, 1,
1)`, torchvision: `self.layer_scale * x` with a (C, 1, 1) parameter); a ViT adds `pos_embed` (1, N, D) and
concatenates a `cls_token` (1, 1, D) along the tokens. Such a parameter is a member of the channel space it meets,
with role `param:<attribute>:<dim>` on the module that owns it: surgery slices that dimension of the attribute.

What is followed from a `get_attr` to its use: the parameter itself, where its dimension aligned with the channels
(broadcasting from the right) has the channel count; or a chain of view-like calls on it (`reshape`, `view`,
`unsqueeze`, `expand`, `to`, ...) when the parameter has exactly one dimension of that size (and, for chains that
reshape, no other dimension larger than 1, so the reshape cannot move channels). Anything else, and constants fx
lifts out of the code (not the model's own parameters), stays unsupported and blocks the space.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import fx, nn

from slimkit.graph.spaces import ChannelInfo, Member, _Spaces

__all__ = ["param_role", "parse_param_role"]

_KEEP_LAYOUT = {"unsqueeze", "expand", "expand_as", "to", "type_as", "contiguous", "clone", "float", "half",
                "detach"}
_RESHAPE = {"reshape", "view", "squeeze", "flatten"}
_FUNCS = {torch.unsqueeze: "unsqueeze", torch.reshape: "reshape", torch.squeeze: "squeeze",
          torch.flatten: "flatten"}


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


class _ParamOps:
    spaces: _Spaces
    modules: dict[str, nn.Module]
    info: dict[fx.Node, Any]
    param_uses: dict[tuple[str, str], ChannelInfo]

    def _shape(self, node: Any) -> tuple[int, ...] | None:  # provided by the builder
        raise NotImplementedError

    def _merge_simple(self, a: ChannelInfo, b: ChannelInfo, node: fx.Node) -> None:  # provided by the builder
        raise NotImplementedError

    def _param_source(self, a: fx.Node, pos: int, length: int) -> tuple[str, str, int] | None:
        """(owner module, attribute, dimension) of the model parameter `a` is, or is a view of, when `a`'s
        dimension `pos` (the channels) comes from that parameter's dimension; None otherwise."""
        chain: list[str] = []
        node = a
        while node.op != "get_attr":
            name = node.target if node.op == "call_method" else _FUNCS.get(node.target)
            if name not in _KEEP_LAYOUT | _RESHAPE or not node.args or not isinstance(node.args[0], fx.Node):
                return None
            if name in ("reshape", "view") and length in _ints(node.args[1:]):
                return None  # a view to a fixed channel count (timm's `scale.view(self.shape)`) stays fixed
            chain.append(name)
            node = node.args[0]
        owner, _, attr = str(node.target).rpartition(".")
        mod = self.modules.get(owner)
        if mod is None or not (attr in mod._parameters or attr in mod._buffers):
            return None  # a constant fx lifted out of the code: not the model's to slice
        shape = tuple(getattr(mod, attr).shape)
        if not chain:
            return (owner, attr, pos) if 0 <= pos < len(shape) and shape[pos] == length else None
        dims = [d for d, n in enumerate(shape) if n == length]
        if len(dims) != 1 or length <= 1:
            return None
        if any(c in _RESHAPE for c in chain) and any(n > 1 for d, n in enumerate(shape) if d != dims[0]):
            return None
        out = self._shape(a)
        if out is None or not 0 <= pos < len(out) or out[pos] != length or sum(n == length for n in out) != 1:
            return None  # (an `expand` that makes a second dimension of that size would leave `pos` ambiguous)
        return owner, attr, dims[0]

    def _add_param_member(self, a: fx.Node, x: ChannelInfo, out_nd: int, node: fx.Node) -> bool:
        """Make the parameter behind operand `a` a member of x's channels; False when it cannot be followed."""
        shape = self._shape(a)
        if shape is None:
            return False
        src = self._param_source(a, x.dim - (out_nd - len(shape)), x.length)
        if src is None:
            return False
        owner, attr, dim = src
        role = param_role(attr, dim)
        first = self.param_uses.get((owner, role))
        if first is not None:  # the same parameter used twice: both uses see the same channels
            self._merge_simple(first, x, node)
            return True
        self.param_uses[(owner, role)] = x
        for s, o in zip(x.segments, x.offsets(), strict=True):
            self.spaces.add(s.space, Member(owner, role, o, s.repeat))
        return True
