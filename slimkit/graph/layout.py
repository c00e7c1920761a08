"""How shape operations move channels: reshape / view / flatten / unflatten, indexing, matmul, attention.

Mixed into the dependency builder. The rules, all read off the traced shapes and the call's arguments:

- A reshape that keeps the channel dimension (only other dimensions change) keeps the channels where they land.
- Merging the channel dimension with the dimensions after it multiplies each segment's `repeat` (flatten, and
  (H, D) -> H*D when heads are merged back).
- Splitting the channel dimension into several (a1, ..., am) keeps one of them as the channel dimension and ties
  the source space to it: the position of an attention module's `num_heads` (whole heads are pruned, the module's
  head count is updated by surgery) or else the position the call leaves free with -1 (a channel shuffle's
  `unflatten(1, (g, -1))` keeps C / g channels of g features each). Other split dimensions keep their size.
- Whatever size the tracked dimension gets after pruning must come out of the model's own code: its argument must
  be -1, a read of the channel count (`B, N, C = x.shape`; then the reshaped channels and x's are one space, since
  the reshape only works while both have the same count), that read scaled to the size of its own split (`x.view(B,
  g, C // g, H, W)` on x's C channels), or an int attribute of the calling module that surgery updates (see
  `slimkit.graph.sizes`). A fixed number there, any other run-time value, a size computed from a channel count
  anywhere else in the call, or a -1 elsewhere (which would silently absorb the change), blocks the space. The same
  holds for `split`: fixed sizes (`x.split(32, 1)`, `x.split([16, 48], 1)`) stay fixed when channels go, so they
  block; `chunk(n)` and sizes computed from the channels adapt.
- An attention module is any module with an int `num_heads` (timm's Hiera: `heads`) whose forward splits the
  channels at a dimension of that size (with `head_dim`, if it has one, after it): whole heads are pruned, the head
  count follows.
- matmul couples the channel dimension of both operands when it is a batch dimension (attention heads); a channel
  dimension contracted by the product is not modelled and blocks. `scaled_dot_product_attention` couples the head
  dimension of q, k and v (the head width, hence the softmax scale, never changes).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch
from torch import fx, nn

from slimkit.graph.ops import _BuilderOps
from slimkit.graph.sizes import HEAD_COUNT_ATTRS, head_count_attr, is_index_tensor
from slimkit.graph.spaces import ChannelInfo, Member, Segment

__all__ = ["HEAD_COUNT_ATTRS", "ShapeOf", "SizeOf", "head_count_attr", "head_owner_of"]


def head_owner_of(module: nn.Module) -> bool:
    return head_count_attr(module) is not None


@dataclass(frozen=True)
class ShapeOf:
    """The run-time shape (`x.shape`, `x.size()`) of a tracked tensor."""

    info: ChannelInfo
    ndim: int


@dataclass(frozen=True)
class SizeOf:
    """A run-time integer equal to `frac` times the channel count of a tracked tensor (`x.shape[1] // 2`)."""

    info: ChannelInfo
    frac: Fraction


def _covers(i: Any, n: int) -> bool:
    """A slice that keeps every one of n channels (`x[:, :n]` on n channels): stays whole when n shrinks."""
    return (isinstance(i, slice) and i.start in (None, 0) and i.step in (None, 1)
            and (i.stop is None or (isinstance(i.stop, int) and i.stop >= n)))


def _prod(xs: Any) -> int:
    return math.prod(int(x) for x in xs)


class _LayoutOps(_BuilderOps):
    def _head_owner(self, node: fx.Node) -> tuple[str, nn.Module] | None:
        owner = self._call_owner(node)
        return owner if owner is not None and head_owner_of(owner[1]) else None

    # -- reshapes
    def _flatten(self, node: fx.Node, x: ChannelInfo, start: int, end: int = -1) -> ChannelInfo | None:
        return self._reshape(node, x, None)

    def _view(self, node: fx.Node, x: ChannelInfo) -> ChannelInfo | None:
        args = list(node.args[1:])
        if len(args) == 1 and isinstance(args[0], (list, tuple)):
            args = list(args[0])
        if not args and "shape" in node.kwargs:
            args = list(node.kwargs["shape"])
        return self._reshape(node, x, args)

    def _unflatten(self, node: fx.Node, x: ChannelInfo) -> ChannelInfo | None:
        src = self._shape(node.args[0])
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        sizes = node.args[2] if len(node.args) > 2 else node.kwargs.get("sizes")
        if src is None or not isinstance(dim, int) or not isinstance(sizes, (list, tuple)):
            return self._unknown(node, "unflatten")
        dim %= len(src)
        args: list[Any] = [None] * dim + list(sizes) + [None] * (len(src) - dim - 1)
        return self._reshape(node, x, args)

    def _reshape(self, node: fx.Node, x: ChannelInfo, args: list[Any] | None) -> ChannelInfo | None:
        """`args`: the requested sizes (ints, -1, run-time values, None = unchanged); None when the op adapts."""
        src, dst = self._shape(node.args[0]), self._shape(node)
        if src is None or dst is None or (args is not None and len(args) != len(dst)):
            return self._unknown(node, "reshape")
        d, lead = x.dim, _prod(src[: x.dim])
        cands = [p for p in range(len(dst)) if _prod(dst[:p]) == lead]
        p = next((q for q in cands if dst[q] == src[d]), next((q for q in cands if dst[q] != 1), None))
        if p is None:
            merged = self._merge_outer(x, src, dst)
            if merged is not None:
                return merged
            return self._unknown(node, f"reshape {tuple(src)} -> {tuple(dst)} across the channel dimension")
        if dst[p] == src[d]:
            out, pos = ChannelInfo(p, x.segments), p
        elif dst[p] % src[d] == 0:
            e = next((e for e in range(d + 1, len(src) + 1) if _prod(src[d:e]) == dst[p]), None)
            if e is None:
                return self._unknown(node, f"reshape {tuple(src)} -> {tuple(dst)}")
            k = _prod(src[d + 1: e])
            out, pos = ChannelInfo(p, tuple(Segment(s.space, s.size, s.repeat * k) for s in x.segments)), p
        else:
            e = next((e for e in range(p + 1, len(dst) + 1) if _prod(dst[p:e]) == src[d]), None)
            if e is None:
                return self._unknown(node, f"reshape {tuple(src)} -> {tuple(dst)}")
            got = self._split_dims(node, x, dst, p, e, args)
            if got is None:
                return self._unknown(node, f"split of the channel dimension {tuple(src)} -> {tuple(dst)}")
            out, pos = got
            if out.segments and self._is_heads(out):
                return self._unknown(node, "reshape with a size computed from a channel count") if (
                    self._fixed_elsewhere(node, args, pos)) else out
        if args is not None and not self._adapts(node, args, pos, out, x):
            return self._unknown(node, f"reshape to a fixed channel count {tuple(dst)} (use -1 there)")
        return out

    @staticmethod
    def _merge_outer(x: ChannelInfo, src: tuple[int, ...], dst: tuple[int, ...]) -> ChannelInfo | None:
        """Dimensions before the channels merged with them (Swin's patch merging: (2, 2, C) -> 4C): the channel
        segments repeat once per outer index (as a concatenation of copies), each feature `inner` times."""
        d = x.dim
        for j in range(d):
            q = next((q for q in range(len(dst)) if _prod(dst[:q]) == _prod(src[:j])), None)
            if q is None:
                continue
            e = next((e for e in range(d + 1, len(src) + 1) if _prod(src[j:e]) == dst[q]), None)
            if e is None:
                continue
            outer, inner = _prod(src[j:d]), _prod(src[d + 1:e])
            return ChannelInfo(q, tuple(Segment(s.space, s.size, s.repeat * inner) for s in x.segments) * outer)
        return None

    def _is_heads(self, x: ChannelInfo) -> bool:
        return any(m.role == "heads" for m in self.spaces.members[self.spaces.leaf(x.segments[0].space)[0]])

    def _follows(self, arg: Any, x: ChannelInfo, size: int) -> bool:
        """A reshape argument that takes whatever size x's channels leave: -1, or x's own run-time channel count
        scaled to `size` (`x.view(B, 2, C // 2, H, W)` on x's C channels)."""
        if isinstance(arg, int) and not isinstance(arg, bool):
            return arg == -1
        ref = self.info.get(arg) if isinstance(arg, fx.Node) else None
        return isinstance(ref, SizeOf) and ref.info.segments == x.segments and ref.frac * x.length == size

    def _adapts(self, node: fx.Node, args: list[Any], pos: int, out: ChannelInfo, x: ChannelInfo) -> bool:
        """Will the model's own call produce the pruned size at `pos` (and nothing else absorb the change)?
        A run-time channel count of another tensor couples that tensor's channels with the reshaped ones."""
        if self._fixed_elsewhere(node, args, pos):
            return False
        return self._follows(args[pos], x, out.length) or self._size_arg(node, args[pos], out)

    # -- run-time sizes: where an integer the model computes from shapes comes from
    def _size_op(self, node: fx.Node) -> Any:
        """ShapeOf / SizeOf for shape queries on tracked tensors and simple arithmetic on them; None otherwise."""
        t, args = node.target, node.args
        src = self.info.get(args[0]) if args and isinstance(args[0], fx.Node) else None
        if isinstance(src, ChannelInfo):
            nd = len(self._shape(args[0]) or ())
            if t is getattr and args[1] == "shape":
                return ShapeOf(src, nd)
            if node.op == "call_method" and t == "size":
                dim = args[1] if len(args) > 1 else node.kwargs.get("dim")
                if dim is None:
                    return ShapeOf(src, nd)
                return SizeOf(src, Fraction(1)) if isinstance(dim, int) and dim % nd == src.dim else None
            return None
        if isinstance(src, ShapeOf) and t is operator.getitem and isinstance(args[1], int):
            return SizeOf(src.info, Fraction(1)) if args[1] % src.ndim == src.info.dim else None
        if isinstance(src, SizeOf) and len(args) == 2 and isinstance(args[1], int) and args[1] > 0:
            if t in (operator.floordiv, operator.truediv):
                return SizeOf(src.info, src.frac / args[1])
            if t is operator.mul:
                return SizeOf(src.info, src.frac * args[1])
        return None

    def _split_dims(self, node: fx.Node, x: ChannelInfo, dst: tuple[int, ...], p: int, e: int,
                    args: list[Any] | None) -> tuple[ChannelInfo, int] | None:
        """Channel dimension split into dst[p:e]: keep one of them as channels, tie the source to it. A source
        channel of r repeated features must stay within one index of the kept dimension (r divides its stride)."""
        if args is None or len(x.segments) != 1:
            return None
        seg = x.segments[0]
        owner = self._head_owner(node)
        if owner is not None:
            heads, head_dim = getattr(owner[1], head_count_attr(owner[1])), getattr(owner[1], "head_dim", None)
            # the last dimension of that size with the head width after it (a leading q/k/v dimension of 3 may
            # equal the head count; a head is never 1 feature wide, so LeViT's (heads, key_dim = heads) picks heads)
            cands = [i for i in range(p, e) if dst[i] == heads and not (isinstance(args[i], int) and args[i] == -1)
                     and (head_dim is None or _prod(dst[i + 1: e]) == head_dim) and _prod(dst[i + 1: e]) > 1]
            if cands and _prod(dst[cands[-1] + 1: e]) % seg.repeat == 0:
                i = cands[-1]
                t = self.spaces.new(dst[i])
                self.spaces.tie(seg.space, t, _prod(dst[i + 1: e]) // seg.repeat)
                self.spaces.add(t, Member(owner[0], "heads"))
                return ChannelInfo(i, (Segment(t, dst[i]),)), i
        free = [i for i in range(len(args)) if self._follows(args[i], x, dst[i])]
        if len(free) != 1 or not p <= free[0] < e or _prod(dst[free[0] + 1: e]) % seg.repeat:
            return None
        i = free[0]
        t = self.spaces.new(dst[i])
        self.spaces.tie(seg.space, t, _prod(dst[i + 1: e]) // seg.repeat)
        return ChannelInfo(i, (Segment(t, dst[i]),)), i

    # -- indexing and dimension bookkeeping
    def _getitem(self, node: fx.Node, x: ChannelInfo) -> ChannelInfo | None:
        idx = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        src = self._shape(node.args[0])
        tensors = [i for i in idx if is_index_tensor(i)]
        if src is None or len(tensors) > 1 or any(
                not (i is None or i is Ellipsis or isinstance(i, (int, slice, fx.Node))) for i in idx):
            return self._unknown(node, "indexing")
        used = sum(i is not None and i is not Ellipsis for i in idx)
        s_dim = o_dim = 0
        new_dim = None
        for i in idx:
            if i is Ellipsis:
                skip = len(src) - used
                if s_dim <= x.dim < s_dim + skip:
                    new_dim = o_dim + x.dim - s_dim
                s_dim, o_dim = s_dim + skip, o_dim + skip
            elif i is None:
                o_dim += 1
            elif s_dim == x.dim:
                if not _covers(i, src[s_dim]):
                    return self._unknown(node, "indexing along the channels")
                new_dim, s_dim, o_dim = o_dim, s_dim + 1, o_dim + 1
            elif is_index_tensor(i):  # one advanced index: its dimensions replace the indexed one, in place
                s_dim, o_dim = s_dim + 1, o_dim + len(self._shape(i) or ())
            else:
                s_dim, o_dim = s_dim + 1, o_dim + (1 if isinstance(i, slice) else 0)
        if new_dim is None:
            new_dim = o_dim + x.dim - s_dim
        return ChannelInfo(new_dim, x.segments)

    def _unsqueeze(self, node: fx.Node, x: ChannelInfo) -> ChannelInfo | None:
        out = self._shape(node)
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if out is None or not isinstance(dim, int):
            return self._unknown(node, "unsqueeze")
        dim %= len(out)
        return ChannelInfo(x.dim + (dim <= x.dim), x.segments)

    def _unbind(self, node: fx.Node, x: ChannelInfo) -> Any:
        src = self._shape(node.args[0])
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        if src is None or not isinstance(dim, int) or dim % len(src) == x.dim:
            return self._unknown(node, "unbind along the channels")
        dim %= len(src)
        return [ChannelInfo(x.dim - (dim < x.dim), x.segments) for _ in range(src[dim])]

    # -- products
    def _operand_dim(self, node: fx.Node, x: ChannelInfo, out_nd: int, contracted: int, keep: int) -> int | None:
        nd = len(self._shape(node))
        if x.dim == nd - 1 - contracted:
            return None  # the channels are summed over by the product
        if x.dim == nd - 1 - keep:
            return out_nd - 1 - keep
        return x.dim + out_nd - nd

    def _matmul(self, node: fx.Node) -> ChannelInfo | None:
        a, b = node.args[0], node.args[1]
        out = self._shape(node)
        sa, sb = self._shape(a), self._shape(b)
        ia, ib = self.info.get(a), self.info.get(b)
        if not isinstance(ia, ChannelInfo) and not isinstance(ib, ChannelInfo):
            return None  # a product of untracked tensors (constants, buffers): nothing to follow
        if out is None or sa is None or sb is None or len(sa) < 2 or len(sb) < 2:
            return self._unknown(node, "matmul")
        da = self._operand_dim(a, ia, len(out), 0, 1) if isinstance(ia, ChannelInfo) else -1
        db = self._operand_dim(b, ib, len(out), 1, 0) if isinstance(ib, ChannelInfo) else -1
        if da is None or db is None:
            return self._unknown(node, "matmul over the channel dimension")
        if isinstance(ia, ChannelInfo) and isinstance(ib, ChannelInfo):
            if da != db or da >= len(out) - 2:
                return self._unknown(node, "matmul of channels along different dimensions")
            self._merge_simple(ChannelInfo(da, ia.segments), ChannelInfo(db, ib.segments), node)
            return ChannelInfo(da, ia.segments)
        x, o, other = (ia, da, sb) if isinstance(ia, ChannelInfo) else (ib, db, sa)
        if o < len(out) - 2:  # a batch dimension: the untracked operand must broadcast along it
            pos = o - (len(out) - len(other))
            if 0 <= pos < len(other) and other[pos] != 1:
                return self._unknown(node, "matmul with a per-channel operand")
        return ChannelInfo(o, x.segments)

    def _sdpa(self, node: fx.Node) -> ChannelInfo | None:
        q, k, v = (node.args + (None,) * 3)[:3]
        q = q if q is not None else node.kwargs.get("query")
        infos = [self.info.get(t) for t in (q, k, v)]
        out = self._shape(node)
        if out is None or not all(isinstance(i, ChannelInfo) for i in infos):
            return self._unknown(node, "scaled_dot_product_attention")
        if any(i.dim >= len(out) - 2 for i in infos) or len({i.dim for i in infos}) != 1:
            return self._unknown(node, "scaled_dot_product_attention over the channels")
        mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
        ms = self._shape(mask) if isinstance(mask, fx.Node) else None
        if ms is not None:  # (a None placeholder has no shape)
            pos = infos[0].dim - (len(out) - len(ms))
            tracked = self.info.get(mask)
            if isinstance(tracked, ChannelInfo) and tracked.dim == pos and tracked.length == infos[0].length:
                self._merge_simple(ChannelInfo(infos[0].dim, tracked.segments), infos[0], node)
            elif isinstance(tracked, ChannelInfo) or (0 <= pos < len(ms) and ms[pos] != 1 and not
                                                      self._add_param_member(mask, infos[0], len(out), node)):
                return self._unknown(node, "attention mask varying per head")
        self._merge_simple(infos[0], infos[1], node)
        self._merge_simple(infos[0], infos[2], node)
        return infos[0]


def is_softmax(node: fx.Node) -> bool:
    t = node.target
    return (node.op == "call_method" and t in ("softmax", "log_softmax")) or t in (
        torch.softmax, torch.log_softmax, nn.functional.softmax, nn.functional.log_softmax)
