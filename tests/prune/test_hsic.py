"""HSIC importance: the biased estimator against a numpy hand computation, and the criterion on a tiny model."""

import numpy as np
import pytest
import torch
from torch import nn

from slimkit.errors import PruneError
from slimkit.prune import prune
from slimkit.prune.hsic import hsic_scores


def _hand_hsic(x: np.ndarray, y: np.ndarray) -> float:
    """tr(K H L H) / (n-1)^2 with explicit matrices: Gaussian K (bandwidth = median pairwise distance), delta L."""
    n = len(x)
    dist = np.array([[np.linalg.norm(x[i] - x[j]) for j in range(n)] for i in range(n)])
    sigma = np.median([dist[i, j] for i in range(n) for j in range(i + 1, n)])
    k = np.exp(-dist**2 / (2 * sigma**2))
    lab = np.array([[1.0 if y[i] == y[j] else 0.0 for j in range(n)] for i in range(n)])
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ lab @ h) / (n - 1) ** 2)


def test_hsic_equals_hand_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 3, 2))  # 7 images, 3 components of 2 features
    y = np.array([0, 1, 0, 2, 1, 0, 2])
    got = hsic_scores(torch.tensor(x), torch.tensor(y))
    want = [_hand_hsic(x[:, c], y) for c in range(3)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5)


def test_hsic_ranks_a_label_dependent_component_first():
    torch.manual_seed(0)
    y = torch.randint(0, 3, (60,))
    informative = torch.nn.functional.one_hot(y, 3).float() + 0.1 * torch.randn(60, 3)
    noise = torch.randn(60, 3)
    scores = hsic_scores(torch.stack([noise, informative], 1), y)
    assert scores[1] > 3 * scores[0] > 0


def test_hsic_needs_two_classes():
    with pytest.raises(PruneError, match="two classes"):
        hsic_scores(torch.randn(8, 2), torch.zeros(8, dtype=torch.long))


def test_hsic_criterion_keeps_the_neurons_that_carry_the_label():
    """An MLP whose first 4 hidden neurons copy label-dependent inputs and the other 4 copy noise inputs: pruning
    half of the neurons by HSIC keeps the first 4 (L1 cannot tell: all weights are equal)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(8))
        net[0].bias.zero_()
        net[2].weight.fill_(0.1)
    y = torch.randint(0, 3, (96,))
    signal = torch.nn.functional.one_hot(y, 3).float().repeat(1, 2)[:, :4] * 3
    x = torch.cat([signal + 0.1 * torch.rand(96, 4), torch.rand(96, 4) * 3], 1)
    data = [(x[i: i + 32], y[i: i + 32]) for i in range(0, 96, 32)]
    pruned = prune(net, x[:2], ratio=0.5, importance="hsic", data=data, ignored_layers=["2"], allocation="uniform")
    kept = pruned[0].weight.abs().argmax(1).sort().values.tolist()
    assert kept == [0, 1, 2, 3]
