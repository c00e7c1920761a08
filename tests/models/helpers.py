"""Independent MAC counts for model tests: torch's FlopCounterMode (FLOPs / 2)."""

import torch
from torch.utils.flop_counter import FlopCounterMode


def flop_counter_macs(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    model.eval()
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(torch.randn(1, *shape))
    return fc.get_total_flops() / 2
