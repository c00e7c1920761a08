"""Model zoo: one file per family, each registering its variants in `slimkit.registry.MODELS`.

Every family module in this package (files not starting with `_`) is imported on first lookup, so adding a family
is adding a file. `create_model("timm:<name>")` and `create_model("torchvision:<name>")` pass through to those
libraries (optional extras); `create_model("path/to/net.py:build")` builds a user's own architecture from a file.
`load_weights(model, path)` loads a user's trained weights (safetensors or a PyTorch state dict) into a model.

Every slimkit model follows one interface (timm's): `forward_features(x)` -> feature map or tokens,
`forward_head(x, pre_logits=False)` -> logits (or the pooled embedding), `get_classifier()` -> the final layer,
`num_features` (embedding width) and `num_classes`.

`multiplex(model, share=2)` (MiniViT weight multiplexing) turns a ViT-style model into one whose consecutive blocks
share their weights; `create_model(name, multiplex=2)` builds a model that way (from the CLI:
`--model-arg multiplex=2`), and a run folder records it, so the model reloads by name.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from torch import nn

from slimkit.errors import ModelError
from slimkit.models._user import is_file_spec
from slimkit.models._weights import LoadReport, load_weights, read_state_dict
from slimkit.models.minivit import multiplex
from slimkit.models.minivit import multiplex as _multiplex
from slimkit.registry import MODELS

__all__ = ["create_model", "list_models", "model_data_config", "model_info", "load_weights", "read_state_dict",
           "LoadReport", "is_file_spec", "multiplex"]

_loaded = False


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    _loaded = True


def create_model(name: str, num_classes: int = 10, in_chans: int = 3, multiplex: int | None = None,
                 **kwargs: Any) -> nn.Module:
    """Build a registered model by name, a `timm:<name>` / `torchvision:<name>` model (never downloads weights), or
    a user's model from a Python file, `path/to/net.py:build` (a function or class returning an nn.Module).
    `multiplex=k`: share the weights of every k consecutive transformer blocks (MiniViT, `multiplex()`)."""
    if multiplex is not None:
        return _multiplex(create_model(name, num_classes, in_chans, **kwargs), share=multiplex)
    if is_file_spec(name) or name.endswith(".py"):
        from slimkit.models._user import create_from_file

        return create_from_file(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    if ":" in name:
        from slimkit.models._external import create_external

        return create_external(name, num_classes=num_classes, in_chans=in_chans, **kwargs)
    _load_families()
    factory = MODELS.get(name)
    try:
        return factory(num_classes=num_classes, in_chans=in_chans, **kwargs)
    except TypeError as e:
        raise ModelError(f"cannot build model {name!r} with arguments {kwargs}: {e}") from None


def list_models(pattern: str = "*") -> list[str]:
    """Registered slimkit model names matching a shell pattern, e.g. `list_models('resnet*')`."""
    _load_families()
    return MODELS.list(pattern)


def model_info(name: str) -> dict[str, Any]:
    """Registry metadata of a model (e.g. its default `input_size`, `paper`, `family`)."""
    _load_families()
    return MODELS.meta(name)


def model_data_config(name: str) -> dict[str, Any] | None:
    """How a model expects its input (mean, std, crop_pct, interpolation, input_size, source), when it has its own:
    timm models from their pretrained config, torchvision classifiers from their weights' transforms (both read
    offline). None for slimkit's models, which are trained here on the dataset's own statistics."""
    if ":" not in name:
        return None
    from slimkit.models._external import external_data_config

    return external_data_config(name)
