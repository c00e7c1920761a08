"""Training-free architecture scores (zero-cost proxies): numbers computed from an untrained network in one
forward pass, used as extra predictor inputs (`features=` of the model-based strategies), never as the objective.

`naswot` (Mellor et al., "Neural Architecture Search without Training", ICML 2021): each image of a batch gets a
binary code, which ReLUs it switches on; networks whose codes keep different images apart score higher. The
score is log |K| with K[i, j] = the number of units on which images i and j agree (N_A minus the Hamming distance).
On NAS-Bench-201 CIFAR-10 it ranks the 15,625 cells with Spearman 0.74 against the 200-epoch validation accuracy,
but not the top ones (the best cell ranks ~4,000th), so it helps a predictor find the good region, not the optimum.

    compute_proxy("naswot", model, images)   # model untouched (scored on a copy)
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.registry import PROXIES

__all__ = ["compute_proxy", "list_proxies", "naswot"]


@PROXIES.register("naswot", paper="arXiv:2006.04647")
def naswot(model: nn.Module, images: torch.Tensor) -> float:
    """log-determinant of the ReLU-code agreement kernel over `images` (a batch of at least 2); -inf when two
    images share a code (K is singular). Scores a train-mode copy (batch statistics, as the paper), no grad."""
    if images.dim() < 2 or len(images) < 2:
        raise ConfigError(f"naswot needs a batch of at least 2 images, got a tensor of shape {tuple(images.shape)}")
    net = copy.deepcopy(model).train()
    codes: list[torch.Tensor] = []

    def hook(_m: nn.Module, _inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        codes.append((out.detach().flatten(1) > 0).to(torch.float64))

    relus = [m for m in net.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    if not relus:
        raise ConfigError("naswot scores ReLU activation patterns, and this model has no nn.ReLU / nn.ReLU6 module "
                          "(functional relu calls are not seen); use another feature for it")
    handles = [m.register_forward_hook(hook) for m in relus]
    try:
        with torch.no_grad():
            net(images)
    finally:
        for h in handles:
            h.remove()
    c = torch.cat(codes, 1)
    k = c @ c.T + (1 - c) @ (1 - c).T
    sign, logdet = np.linalg.slogdet(k.numpy())
    return float(logdet) if sign > 0 else float("-inf")


def compute_proxy(name: str, model: nn.Module, images: torch.Tensor) -> float:
    fn: Callable[[nn.Module, torch.Tensor], float] = PROXIES.get(name)
    return float(fn(model, images))


def list_proxies(pattern: str = "*") -> list[str]:
    return PROXIES.list(pattern)
