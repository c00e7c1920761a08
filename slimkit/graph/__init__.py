"""Model analysis for pruning: tracing and channel dependency groups. Reads models, never changes them."""

from slimkit.graph.dependency import ChannelInfo, DependencyGraph, Group, Member, Segment, build_dependency_graph
from slimkit.graph.trace import trace

__all__ = ["ChannelInfo", "DependencyGraph", "Group", "Member", "Segment", "build_dependency_graph", "trace"]
