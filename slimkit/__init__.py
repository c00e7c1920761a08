"""slimkit: search, prune, distill, profile and export small, fast vision networks.

The public surface is short and lazily imported, so `import slimkit` stays cheap:

    model = slimkit.create_model("resnet20", num_classes=10, in_chans=1)
    slimkit.load_weights(model, "my_weights.safetensors")  # or .pt/.pth; returns what was loaded / replaced
    report = slimkit.profile(model, (1, 28, 28))
    small = slimkit.prune(model, torch.randn(1, 1, 28, 28), macs_target=0.5)
"""

from __future__ import annotations

import importlib
from typing import Any

from slimkit.errors import SlimkitError

__version__ = "0.1.0"

# public name -> "module:attribute"
_LAZY = {
    "create_model": "slimkit.models:create_model",
    "list_models": "slimkit.models:list_models",
    "load_weights": "slimkit.models:load_weights",  # a user's weights file into a created model
    "create_dataset": "slimkit.data:create_dataset",
    "list_datasets": "slimkit.data:list_datasets",
    "profile": "slimkit.profile",  # a callable module: slimkit.profile(model, size)
    "measure_latency": "slimkit.profile:measure_latency",
    "export_onnx": "slimkit.export:export_onnx",
    "quantize_int8": "slimkit.quantize:quantize_int8",
    "Trainer": "slimkit.train:Trainer",
    "TrainConfig": "slimkit.train:TrainConfig",
    "prune": "slimkit.prune",  # a callable module: slimkit.prune(model, x, ...), slimkit.prune.save(...)
    "save": "slimkit.prune:save",
    "load": "slimkit.prune:load",
    "search": "slimkit.nas:search",
    "search_prune_ratios": "slimkit.nas.prune_ratios:search_prune_ratios",
    "NB201Benchmark": "slimkit.nas:NB201Benchmark",
}

__all__ = ["SlimkitError", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, _, attr = _LAZY[name].partition(":")
        value = importlib.import_module(module)
        value = getattr(value, attr) if attr else value
        globals()[name] = value
        return value
    raise AttributeError(f"module 'slimkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
