"""Where a reshape's sizes come from: run-time reads of a channel size, and module attributes surgery updates.

Mixed into the dependency builder. A view / reshape / expand whose argument along the channels is

- a read of the channel size of a tracked tensor (`B, N, C = x.shape`, `x.size(-1)`): after pruning the read gives
  the pruned size, so the argument adapts; the two tensors' channels are coupled (they must have the same count);
- an int equal to an int attribute of the module whose forward makes the call (`self.attn_dim`, `self.out_dim`,
  `self.num_heads`): that attribute becomes a member of the space (role `attr:<name>`) and surgery sets it to the
  kept count (an attribute used along two spaces couples them); likewise a split into the sizes an attribute lists
  (MixNet's `self.splits`, role `sizes:<name>`: each size becomes what its part keeps);
- anything computed from a channel size (`C // self.num_heads`, `C * 2`): would change with pruning in a way the
  engine cannot follow, so the space whose size was read is blocked, and so is the reshaped one.

Arguments along other dimensions must not depend on a channel size either (DaViT's and torchvision Swin's
`reshape(B, N, 3, heads, C // heads)` derive the head width from the input width: such attention is kept whole;
`slimkit.prune.rewrite` gives both an equivalent forward that prunes).
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn

from slimkit.graph.ops import _BuilderOps
from slimkit.graph.spaces import ChannelInfo, Member

__all__ = ["HEAD_COUNT_ATTRS", "attr_role", "head_count_attr", "parse_attr_role", "sizes_role", "parse_sizes_role"]

_ARITH = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod,
          operator.neg, int, max, min, operator.getitem}


HEAD_COUNT_ATTRS = ("num_heads", "heads")  # timm, torchvision and slimkit; timm's Hiera (MaskUnitAttention)


def head_count_attr(module: nn.Module) -> str | None:
    """The int attribute an attention module declares its head count in (`HEAD_COUNT_ATTRS`), None if it has none."""
    for attr in HEAD_COUNT_ATTRS:
        n = getattr(module, attr, None)
        if type(n) is int and n >= 1:
            return attr
    return None


def attr_role(attr: str) -> str:
    return f"attr:{attr}"


def parse_attr_role(role: str) -> str | None:
    """The attribute name of an `attr:` role, None for any other role."""
    return role[len("attr:"):] if role.startswith("attr:") else None


def sizes_role(attr: str) -> str:
    """The role of a module attribute that lists split sizes along the channels (MixNet's `splits`): surgery sets
    each size to the channels its part keeps."""
    return f"sizes:{attr}"


def parse_sizes_role(role: str) -> str | None:
    """The attribute of a `sizes:` role, None for any other role."""
    return role[len("sizes:"):] if role.startswith("sizes:") else None


class _SizeOps(_BuilderOps):
    attr_uses: dict[tuple[str, str], ChannelInfo]

    # -- run-time size reads
    def _size_read(self, node: Any) -> tuple[fx.Node, int] | None:
        """(tensor, dimension) when `node` is `t.shape[d]`, `t.size()[d]` or `t.size(d)` of a tensor `t`."""
        if not isinstance(node, fx.Node):
            return None
        if node.op == "call_method" and node.target == "size" and len(node.args) >= 2:
            t, d = node.args[0], node.args[1]
        elif node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[1], int):
            src, d = node.args[0], node.args[1]
            if not isinstance(src, fx.Node):
                return None
            if src.op == "call_function" and src.target is getattr and src.args[1] == "shape":
                t = src.args[0]
            elif src.op == "call_method" and src.target == "size" and len(src.args) == 1:
                t = src.args[0]
            else:
                return None
        else:
            return None
        shape = self._shape(t)
        if not isinstance(t, fx.Node) or shape is None or not isinstance(d, int):
            return None
        return t, d % len(shape)

    def _channel_read(self, node: Any) -> fx.Node | None:
        """The tracked tensor whose channel count `node` reads directly, else None."""
        got = self._size_read(node)
        if got is None:
            return None
        t, d = got
        info = self.info.get(t)
        return t if isinstance(info, ChannelInfo) and info.dim == d else None

    def _channel_reads_in(self, value: Any, depth: int = 12) -> list[fx.Node]:
        """Tracked tensors whose channel count `value` (a run-time size expression) is computed from."""
        if isinstance(value, (list, tuple)):
            return [t for v in value for t in self._channel_reads_in(v, depth)]
        if not isinstance(value, fx.Node) or depth == 0:
            return []
        direct = self._channel_read(value)
        if direct is not None:
            return [direct]
        if self._size_read(value) is not None:
            return []
        if value.op == "call_function" and value.target in _ARITH:
            return self._channel_reads_in(list(value.args), depth - 1)
        return []

    def _derives_from_channels(self, value: Any, node: fx.Node) -> bool:
        """True (and the spaces read are blocked) when `value` is computed from, not equal to, a channel count."""
        if self._channel_read(value) is not None:
            return False
        reads = self._channel_reads_in(value)
        for t in reads:
            self._block_info(self.info[t], f"{node.name}: a size computed from the channel count")
        return bool(reads)

    # -- module attributes
    def _call_owner(self, node: fx.Node) -> tuple[str, nn.Module] | None:
        """The module whose forward makes this call (innermost entry of the fx module stack)."""
        stack = node.meta.get("nn_module_stack") or {}
        if not stack:
            return None
        name = list(stack.values())[-1][0]
        mod = self.modules.get(name)
        return (name, mod) if mod is not None else None

    def _attr_member(self, node: fx.Node, value: int, x: ChannelInfo) -> bool:
        """Make the owner's int attributes equal to `value` members of x's channels (role `attr:<name>`)."""
        owner = self._call_owner(node)
        if owner is None or value <= 1:
            return False
        name, mod = owner
        attrs = [a for a, v in vars(mod).items() if type(v) is int and v == value and not a.startswith("_")]
        heads = head_count_attr(mod)
        if heads in attrs and self._heads_of(name, x):  # a count of this module's heads is its head count, never
            attrs = [heads]  # another attribute that happens to be equal (Hiera's q_stride / window_size = 4 heads)
        if not attrs:
            return False
        for attr in attrs:
            first = self.attr_uses.get((name, attr))
            if first is not None:
                self._merge_simple(first, ChannelInfo(first.dim, x.segments), node)
                continue
            self.attr_uses[(name, attr)] = x
            for s, o in zip(x.segments, x.offsets(), strict=True):
                self.spaces.add(s.space, Member(name, attr_role(attr), o, s.repeat))
        return True

    def _heads_of(self, name: str, x: ChannelInfo) -> bool:
        """Are x's channels the heads of module `name`?"""
        return any(m.role == "heads" and m.module == name for s in x.segments
                   for m in self.spaces.members[self.spaces.leaf(s.space)[0]])

    def _size_arg(self, node: fx.Node, arg: Any, x: ChannelInfo) -> bool:
        """Will `arg`, the size a call requests along x's channels, follow pruning? (Couples or adds members.)"""
        if isinstance(arg, int) and not isinstance(arg, bool):
            return arg == -1 or self._attr_member(node, arg, x)
        t = self._channel_read(arg)
        if t is not None:
            read = self.info[t]
            self._merge_simple(read, ChannelInfo(read.dim, x.segments), node)
            return True
        self._derives_from_channels(arg, node)  # (blocks the spaces read)
        return False  # any other run-time value: its size after pruning is not known

    def _fixed_elsewhere(self, node: fx.Node, args: list[Any], pos: int) -> bool:
        """Arguments at positions other than the channels that a pruning would change (blocks what they read)."""
        return any(self._derives_from_channels(a, node) for i, a in enumerate(args) if i != pos)


def is_index_tensor(node: Any) -> bool:
    """An fx value used as an advanced index (a tensor, not an int / slice / None)."""
    if not isinstance(node, fx.Node):
        return False
    meta = node.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "dtype") and meta.dtype in (torch.long, torch.int, torch.bool)
