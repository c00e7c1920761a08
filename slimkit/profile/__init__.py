"""Cost of a model: MACs and parameters (counted), latency and peak memory (measured)."""

from slimkit._callable import make_callable
from slimkit.profile.counting import (
    LayerCost,
    ProfileReport,
    count_macs,
    count_node_macs,
    count_params,
    make_inputs,
    profile,
)
from slimkit.profile.hardware import channel_multiple, cpu_capability, has_vnni
from slimkit.profile.latency import LatencyReport, compare_onnx_latency, measure_latency

__all__ = ["LatencyReport", "LayerCost", "ProfileReport", "channel_multiple", "compare_onnx_latency", "count_macs",
           "count_node_macs", "count_params", "cpu_capability", "has_vnni", "make_inputs", "measure_latency", "profile"]

make_callable(__name__, profile)  # `slimkit.profile(model, (C, H, W))` calls `slimkit.profile.profile`
