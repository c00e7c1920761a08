import numpy as np
import pytest
from scipy.stats import spearmanr

from slimkit.errors import ConfigError, UnknownNameError
from slimkit.nas import create_predictor, list_predictors


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 2, (n, 12)).astype(float)
    y = x @ rng.normal(size=12) + 0.5 * x[:, 0] * x[:, 1]
    return x, y


@pytest.mark.parametrize("name", ["mlp", "rf", "gbdt", "gp", "ridge"])
def test_each_predictor_ranks_held_out_points(name):
    x, y = _data()
    pred = create_predictor(name, seed=0).fit(x[:200], y[:200])
    mean, std = pred.predict(x[200:])
    assert mean.shape == std.shape == (100,)
    assert spearmanr(mean, y[200:]).statistic > 0.8


def test_ensemble_spread_and_determinism():
    x, y = _data()
    a = create_predictor("mlp", seed=3, ensemble=3, max_iter=200).fit(x[:100], y[:100]).predict(x[100:])
    b = create_predictor("mlp", seed=3, ensemble=3, max_iter=200).fit(x[:100], y[:100]).predict(x[100:])
    np.testing.assert_array_equal(a[0], b[0])
    assert (a[1] > 0).all()


def test_bad_input():
    assert set(list_predictors()) >= {"mlp", "rf", "gbdt", "gp"}
    with pytest.raises(UnknownNameError):
        create_predictor("xgb")
    with pytest.raises(ConfigError, match="bad options"):
        create_predictor("rf", depth=3)
    with pytest.raises(ConfigError, match="before fit"):
        create_predictor("rf").predict(np.zeros((1, 2)))


def test_normal_scores_are_the_rank_transform_within_the_reference():
    from scipy.stats import norm, rankdata

    from slimkit.nas.predictors import normal_scores

    y = np.array([3.0, 1.0, 2.0, 2.0, 10.0])
    np.testing.assert_allclose(normal_scores(y), norm.ppf((rankdata(y) - 0.5) / len(y)))
    ref = np.array([[0.0, 5.0], [1.0, 6.0], [2.0, 7.0], [3.0, 8.0]])
    got = normal_scores(np.array([[1.0, 8.0], [np.nan, 5.0]]), ref)
    # 1.0 is the 2nd of 4 in column 0, 8.0 the 4th in column 1; NaN counts as the lowest
    np.testing.assert_allclose(got, norm.ppf((np.array([[2, 4], [1, 1]]) - 0.5) / 4))
    with pytest.raises(ConfigError, match="reference"):
        normal_scores(np.zeros((2, 2)), np.zeros((3, 3)))
