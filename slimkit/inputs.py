"""Example inputs as one shape: a tensor, or a tuple/list of tensors for a model with several inputs.

Pruning, export and profiling all take `example_inputs` this way; each caller raises its own `SlimkitError`
subclass (pruning a ConfigError, export an ExportError) so a user catches the family of the call they made.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from slimkit.errors import ConfigError, SlimkitError

__all__ = ["as_tensor_tuple", "built_for_size", "size_hint"]


def as_tensor_tuple(example_inputs: Any, error: type[SlimkitError] = ConfigError, also: str = ""
                    ) -> tuple[torch.Tensor, ...]:
    """A tensor or a non-empty tuple/list of tensors, as a tuple; `error` (a SlimkitError subclass) otherwise.
    `also` names what else the caller accepts (e.g. "a shape like (C, H, W)"), for the message."""
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and example_inputs and all(
            isinstance(t, torch.Tensor) for t in example_inputs):
        return tuple(example_inputs)
    got = "None" if example_inputs is None else type(example_inputs).__name__
    alt = f", {also}," if also else ""
    raise error(f"example_inputs must be a tensor shaped like one input batch (e.g. torch.randn(1, 3, 224, 224)){alt} "
                f"or a tuple of tensors for a model with several inputs; got {got}")


def built_for_size(model: nn.Module) -> tuple[int, int] | None:
    """The (H, W) `model` only runs at, when it says so: a timm-style patch embedding with a fixed image size and
    strict size checking (its position embedding holds one entry per patch of that size); None otherwise."""
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "img_size", None)
    if not getattr(embed, "strict_img_size", False) or getattr(model, "dynamic_img_size", False):
        return None
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return int(size[0]), int(size[1])
    return None


def size_hint(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> str:
    """'; it is built for 224x224 inputs ...' when the model runs at one size only and the inputs differ, else ''
    (appended to the message of a model that failed on `inputs`)."""
    size, x = built_for_size(model), inputs[0] if inputs else None
    if size is None or x is None or x.dim() != 4 or tuple(x.shape[-2:]) == size:
        return ""
    h, w = x.shape[-2:]
    arg = h if h == w else (h, w)
    return (f"; {type(model).__name__} is built for {size[0]}x{size[1]} inputs (its position embedding has one entry "
            f"per patch of that size), got {h}x{w}: use {size[0]}x{size[1]} inputs, or build the model for {h}x{w} "
            f"(timm: the model argument img_size={arg}, or dynamic_img_size=True)")
