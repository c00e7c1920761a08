"""Training-free proxies: NASWOT against a hand computation of the ReLU-code kernel."""

import numpy as np
import pytest
import torch
from torch import nn

from slimkit.errors import ConfigError, UnknownNameError
from slimkit.nas.proxies import compute_proxy, list_proxies, naswot


def _codes_by_hand(w1, b1, w2, b2, x):
    """Binary ReLU codes of a 2-layer ReLU MLP, computed with numpy."""
    h1 = np.maximum(x @ w1.T + b1, 0)
    h2 = np.maximum(h1 @ w2.T + b2, 0)
    return np.concatenate([h1 > 0, h2 > 0], 1).astype(int)


def test_naswot_is_the_logdet_of_the_hamming_kernel():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 6), nn.ReLU(), nn.Linear(6, 3))
    x = torch.randn(6, 5)
    w = [p.detach().numpy().astype(np.float64) for p in net.parameters()]
    c = _codes_by_hand(w[0], w[1], w[2], w[3], x.numpy().astype(np.float64))
    n_units = c.shape[1]
    k = np.array([[n_units - np.sum(ci != cj) for cj in c] for ci in c], float)  # N_A - Hamming distance
    sign, logdet = np.linalg.slogdet(k)
    assert sign > 0
    assert naswot(net, x) == pytest.approx(logdet, rel=1e-9)
    assert compute_proxy("naswot", net, x) == naswot(net, x) and "naswot" in list_proxies()


def test_naswot_leaves_the_model_untouched_and_uses_batch_statistics():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2)).eval()
    x = torch.randn(8, 1, 6, 6)
    net(x)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    score = naswot(net, x)
    assert not net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert not any(m._forward_hooks for m in net.modules())
    assert np.isfinite(score)


def test_identical_images_give_minus_infinity_and_bad_input_is_named():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    x = torch.randn(1, 3).repeat(4, 1)  # equal codes: K is all N_A, singular
    assert naswot(net, x) == float("-inf")
    with pytest.raises(ConfigError, match="at least 2"):
        naswot(net, torch.randn(1, 3))
    with pytest.raises(ConfigError, match="no nn.ReLU"):
        naswot(nn.Sequential(nn.Linear(3, 4), nn.Tanh()), torch.randn(4, 3))
    with pytest.raises(UnknownNameError, match="naswot"):
        compute_proxy("naswott", net, x)
