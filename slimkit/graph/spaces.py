"""Channel spaces and their layouts: the data types of the dependency graph and the union-find that couples them.

A *space* is a set of channels pruned together. Two spaces can be coupled in two ways:

- `union(a, b)`: same size, channel c of a is channel c of b (a residual add, a shared layer).
- `tie(p, q, k)`: channel c of p is channel (c // k) mod |q| of q, with k * |q| dividing |p|. This is how tiled
  layouts are expressed: a grouped conv with g groups reads its input space p of size C as g tiles of one space q
  of size C / g (k = 1); an attention reshape (3 * H * D) -> (3, H, D) reads the qkv output as heads (|q| = H,
  k = D); a channel shuffle reads C as C / g channels of g features each.

Ties compose: every space resolves to a *leaf* (a root without a tie) and a repeat r, channel c -> (c // r) mod
|leaf|. Tying two spaces whose leaves differ joins the two relations: same repeat -> both leaves narrow to the gcd
of their sizes (a coarser leaf); repeats dividing each other with sizes that nest -> the finer leaf ties to the
coarser one; anything else is blocked. Members live on leaves; a member added to a tied space becomes a member of
its leaf with a larger `repeat` and `tile` (see `Member`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch

__all__ = ["Segment", "ChannelInfo", "Member", "Group"]


@dataclass(frozen=True)
class Segment:
    space: int
    size: int  # channels
    repeat: int = 1  # features per channel along the dimension (H*W after flatten, D after merging heads)


@dataclass(frozen=True)
class ChannelInfo:
    dim: int  # channel dimension of the tensor
    segments: tuple[Segment, ...]

    def offsets(self) -> list[int]:
        out, o = [], 0
        for s in self.segments:
            out.append(o)
            o += s.size * s.repeat
        return out

    @property
    def length(self) -> int:
        return sum(s.size * s.repeat for s in self.segments)


@dataclass(frozen=True)
class Member:
    """Parameters of `module` on one dimension. Channel c of a group of n channels owns the indices
    offset + t * n * repeat + c * repeat + j for t < tile, j < repeat (tile > 1: the same channel in every group
    of a grouped conv, in q, k and v of an attention layer)."""

    module: str
    role: str  # "out" (producer rows), "in" (consumer columns), "dw" (depthwise: both), "norm" (per-channel
    # affine), "heads" (an attention module's head count: no parameters of its own)
    offset: int = 0
    repeat: int = 1
    tile: int = 1

    def index(self, size: int) -> torch.Tensor:
        """size x (tile * repeat) indices of each channel along the member's dimension."""
        c = torch.arange(size)[:, None, None] * self.repeat
        t = torch.arange(self.tile)[None, :, None] * size * self.repeat
        return (self.offset + c + t + torch.arange(self.repeat)[None, None, :]).reshape(size, -1)


@dataclass
class Group:
    """A prunable set of coupled channels: removing channel c removes it from every member."""

    id: int
    size: int
    members: list[Member] = field(default_factory=list)

    @property
    def producers(self) -> list[Member]:
        return [m for m in self.members if m.role in ("out", "dw")]

    def __str__(self) -> str:
        def tag(m: Member) -> str:
            extra = (f"@{m.offset}" if m.offset else "") + (f"x{m.tile}" if m.tile > 1 else "")
            return f"{m.module}:{m.role}{extra}"
        return f"Group {self.id} ({self.size} channels): " + ", ".join(tag(m) for m in self.members)


class _Spaces:
    """Union-find over channel spaces with ties (see the module docstring), blocked flags and members."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.blocked: list[bool] = []
        self.members: list[list[Member]] = []
        self.reasons: dict[int, str] = {}
        self.tied: dict[int, tuple[int, int]] = {}  # root -> (space, k): channel c is channel (c // k) mod |space|

    def new(self, size: int, blocked: bool = False, reason: str = "") -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.blocked.append(blocked)
        self.members.append([])
        if blocked:
            self.reasons[len(self.parent) - 1] = reason
        return len(self.parent) - 1

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def leaf(self, i: int) -> tuple[int, int]:
        """The leaf of space i and the repeat r: channel c of i is channel (c // r) mod |leaf| of the leaf."""
        r, k = self.find(i), 1
        while r in self.tied:
            nxt, step = self.tied[r]
            r, k = self.find(nxt), k * step
        return r, k

    def is_leaf(self, i: int) -> bool:
        return self.find(i) == i and i not in self.tied

    def union(self, a: int, b: int) -> None:
        if self.size[self.find(a)] != self.size[self.find(b)]:
            self.block(a, "coupled spaces of different sizes")
            self.block(b, "coupled spaces of different sizes")
            return
        self.tie(a, b, 1)

    def tie(self, p: int, q: int, k: int = 1) -> None:
        """Channel c of p is channel (c // k) mod |q| of q."""
        if self.size[self.find(p)] % (k * self.size[self.find(q)]):
            self.block(p, "tiled layout does not divide the channels")
            self.block(q, "tiled layout does not divide the channels")
            return
        a, ra = self.leaf(p)
        b, rb = self.leaf(q)
        self._join(a, ra, b, k * rb)

    def _join(self, a: int, ra: int, b: int, rb: int) -> None:
        """Two leaf relations of one space, c -> (c // ra) mod |a| and c -> (c // rb) mod |b|: keep their join."""
        if a == b and ra == rb:
            return
        if ra == rb:
            d = math.gcd(self.size[a], self.size[b])
            self._merge(self._narrow(a, d), self._narrow(b, d))
        elif rb % ra == 0 and self.size[a] % (rb // ra * self.size[b]) == 0 and a != b:
            self._attach(a, b, rb // ra)
        elif ra % rb == 0 and self.size[b] % (ra // rb * self.size[a]) == 0 and a != b:
            self._attach(b, a, ra // rb)
        else:
            self.block(a, "channel layouts that cannot be reconciled (different tilings of one space)")
            self.block(b, "channel layouts that cannot be reconciled (different tilings of one space)")

    def _narrow(self, a: int, d: int) -> int:
        if self.size[a] == d:
            return a
        n = self.new(d, self.blocked[a], self.reasons.get(a, ""))
        self._attach(a, n, 1)
        return n

    def _attach(self, a: int, b: int, k: int) -> None:
        """Leaf a becomes tied to leaf b: its members move to b with their layouts rewritten."""
        t = self.size[a] // (k * self.size[b])
        self.members[b] += [replace(m, repeat=m.repeat * k, tile=m.tile * t) for m in self.members[a]]
        self.members[a] = []
        self.tied[a] = (b, k)
        if self.blocked[a]:
            self.block(b, self.reasons.get(a, "blocked"))

    def _merge(self, a: int, b: int) -> None:
        if a == b:
            return
        self.parent[b] = a
        if self.blocked[b] and not self.blocked[a]:
            self.reasons[a] = self.reasons.get(b, "blocked")
        self.blocked[a] = self.blocked[a] or self.blocked[b]
        self.members[a] += self.members[b]
        self.members[b] = []

    def block(self, i: int, reason: str) -> None:
        r, _ = self.leaf(i)
        if not self.blocked[r]:
            self.reasons[r] = reason
        self.blocked[r] = True

    def add(self, space: int, member: Member) -> None:
        r, k = self.leaf(space)
        t = self.size[self.find(space)] // (k * self.size[r])
        self.members[r].append(replace(member, repeat=member.repeat * k, tile=member.tile * t))
