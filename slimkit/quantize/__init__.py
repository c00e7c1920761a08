"""INT8 post-training quantization (onnxruntime, QDQ) with sensitivity-guided mixed precision."""

from slimkit.quantize.graph import Layer, int8_layers, weighted_layers
from slimkit.quantize.ptq import (
    FloatLayer,
    Int8Config,
    QuantizeResult,
    float_layer_nodes,
    ort_quantization,
    quantize_int8,
    resolve_float_layers,
    resolve_reduce_range,
)
from slimkit.quantize.sensitivity import LayerScore, Step

__all__ = ["FloatLayer", "Int8Config", "Layer", "LayerScore", "QuantizeResult", "Step", "float_layer_nodes",
           "int8_layers", "ort_quantization", "quantize_int8", "resolve_float_layers", "resolve_reduce_range",
           "weighted_layers"]
