"""Seeds: one call seeds every generator a run draws from, and a block can run under its own seed.

A run is a function of its seed only if everything random happens after the seed is set: weight initialisation
(building the model), data order, augmentation, dropout. `seeded(seed)` is how jobs build models, so two runs
with one seed start from the same weights whatever ran before. Library code never reseeds the process: it draws
inside `own_rng()` (the Trainer's `fit`, `seeded`), so the caller's generators are as they were afterwards and a
second job in the same process does not depend on what the first one drew.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["own_rng", "seed_everything", "seeded"]


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, NumPy's global generator and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextmanager
def own_rng() -> Iterator[None]:
    """Run the block on the process's generators (Python, NumPy, torch CPU) and restore their states after: what
    the block seeds or draws neither depends on nor disturbs what runs around it."""
    py, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(np_state)


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with every generator seeded from `seed` (`own_rng`: the states before it are restored after)."""
    with own_rng():
        seed_everything(seed)
        yield
