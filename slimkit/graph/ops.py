"""What the channel-rule mixins (sizes, params, layout, rules) share: the dependency builder's state and the
operations one mixin calls on another or on the builder, declared once (read-only analysis).

`graph.dependency._Builder` combines the mixins and implements the builder's own operations; each mixin implements
its own. Declaring them here, at the end of every mixin's method order, lets any mixin call any of them without
re-declaring a stub, and the order the builder lists its mixins in does not matter.
"""

from __future__ import annotations

from typing import Any

from torch import fx, nn

from slimkit.graph.spaces import ChannelInfo, _Spaces

__all__: list[str] = []


class _BuilderOps:
    spaces: _Spaces
    modules: dict[str, nn.Module]
    info: dict[fx.Node, Any]

    # -- the builder's (graph.dependency._Builder)
    def _shape(self, node: Any) -> tuple[int, ...] | None:
        raise NotImplementedError

    def _merge_simple(self, a: ChannelInfo, b: ChannelInfo, node: fx.Node) -> None:
        raise NotImplementedError

    def _block_info(self, info: Any, reason: str) -> None:
        raise NotImplementedError

    def _unknown(self, node: fx.Node, what: str) -> ChannelInfo | None:
        raise NotImplementedError

    def _fresh(self, node: fx.Node, blocked: bool, reason: str = "", dim: int | None = None) -> ChannelInfo | None:
        raise NotImplementedError

    # -- the mixins'
    def _reshape(self, node: fx.Node, x: ChannelInfo, args: list[Any] | None) -> ChannelInfo | None:  # layout
        raise NotImplementedError

    def _add_param_member(self, a: fx.Node, x: ChannelInfo, out_nd: int, node: fx.Node) -> bool:  # params
        raise NotImplementedError

    def _call_owner(self, node: fx.Node) -> tuple[str, nn.Module] | None:  # sizes
        raise NotImplementedError

    def _size_arg(self, node: fx.Node, arg: Any, x: ChannelInfo) -> bool:  # sizes
        raise NotImplementedError

    def _fixed_elsewhere(self, node: fx.Node, args: list[Any], pos: int) -> bool:  # sizes
        raise NotImplementedError
