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
