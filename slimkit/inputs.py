"""Example inputs as one shape: a tensor, or a tuple/list of tensors for a model with several inputs.

Pruning, export and profiling all take `example_inputs` this way; each caller raises its own `SlimkitError`
subclass (pruning a ConfigError, export an ExportError) so a user catches the family of the call they made.
"""

from __future__ import annotations

from typing import Any

import torch

from slimkit.errors import ConfigError, SlimkitError

__all__ = ["as_tensor_tuple"]


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
