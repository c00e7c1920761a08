import pickle

import pytest

from slimkit.errors import ConfigError
from slimkit.nas import NB201Space
from slimkit.nas.train_problem import TrainProblem
from slimkit.profile import count_macs, count_params


def test_costs_match_the_profiler_and_pickling_drops_data():
    prob = TrainProblem(NB201Space(), data="digits", limit=None, epochs=1,
                        build_kwargs={"channels": 4, "cells_per_stage": 1})
    cell = (3, 1, 2, 1, 3, 4)
    costs = prob.costs(cell)
    model = NB201Space().build(cell, num_classes=10, in_chans=1, channels=4, cells_per_stage=1)
    assert costs["params_M"] == count_params(model) / 1e6
    assert costs["macs_M"] == count_macs(model, (1, 8, 8)) / 1e6
    clone = pickle.loads(pickle.dumps(prob))
    assert clone._splits is None and clone.costs(cell) == costs


def test_bad_settings():
    with pytest.raises(ConfigError, match="metric"):
        TrainProblem(NB201Space(), metric="loss")
    with pytest.raises(ConfigError, match="epochs"):
        TrainProblem(NB201Space(), epochs=0)


def test_features_are_costs_and_reproducible_proxies():
    import numpy as np
    import torch

    from slimkit.nas.proxies import naswot

    kw = dict(data="digits", limit=None, epochs=1, build_kwargs={"channels": 4, "cells_per_stage": 1}, seed=3)
    prob = TrainProblem(NB201Space(), **kw)
    cells = [(3, 1, 2, 1, 3, 4), (2, 0, 1, 3, 3, 1)]
    got = prob.features(cells, ["naswot", "params_M"])
    assert got[:, 1].tolist() == [prob.costs(c)["params_M"] for c in cells]
    images = torch.stack([prob.splits.train[i][0] for i in range(64)])
    for cell, score in zip(cells, got[:, 0], strict=True):
        torch.manual_seed(3)  # the problem's seed initialises the scored network
        model = NB201Space().build(cell, num_classes=10, in_chans=1, channels=4, cells_per_stage=1)
        assert score == naswot(model, images)
    again = TrainProblem(NB201Space(), **kw).features(cells[::-1], ["naswot"])[:, 0]
    np.testing.assert_array_equal(again, got[::-1, 0])
    with pytest.raises(ConfigError, match="unknown features"):
        prob.features(cells, ["synflow"])
