import numpy as np
import pytest

from slimkit.errors import ConfigError
from slimkit.nas.strategies.acquisition import acquire, expected_improvement


def test_expected_improvement_matches_monte_carlo():
    rng = np.random.default_rng(0)
    mean, std, best = np.array([0.0, 1.0, -1.0, 2.0]), np.array([1.0, 0.5, 2.0, 0.1]), 0.8
    samples = rng.normal(mean, std, size=(400_000, 4))
    mc = np.maximum(samples - best, 0).mean(0)
    np.testing.assert_allclose(expected_improvement(mean, std, best), mc, atol=5e-3)


def test_zero_std_is_plain_improvement():
    np.testing.assert_array_equal(expected_improvement(np.array([1.0, 3.0]), np.zeros(2), 2.0), [0.0, 1.0])


def test_unknown_acquisition():
    assert acquire("ucb", np.ones(2), np.ones(2), 0.0).tolist() == [2.0, 2.0]
    with pytest.raises(ConfigError, match="mean, ei or ucb"):
        acquire("pi", np.ones(1), np.ones(1), 0.0)
