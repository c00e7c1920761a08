"""Bad budgets and bad arguments: a clear SlimkitError naming the fix, raised before any tracing or pruning."""

import math

import pytest
import torch
from torch import nn

import slimkit.prune.pruner as pruner_mod
from slimkit.errors import ConfigError, ModelError, SlimkitError
from slimkit.models import create_model
from slimkit.prune import PruneConfig, prune


@pytest.fixture
def no_tracing(monkeypatch):
    """Fail the test if anything gets as far as building the dependency graph."""

    def boom(*a, **k):
        raise AssertionError("validation must happen before the graph is built")

    monkeypatch.setattr(pruner_mod, "build_dependency_graph", boom)


@pytest.mark.parametrize("kw, match", [
    ({"macs_target": math.nan}, "not a finite number"),
    ({"macs_target": math.inf}, "not a finite number"),
    ({"params_target": -math.inf}, "not a finite number"),
    ({"ratio": math.nan}, "not a finite number"),
    ({"macs_target": "0.5"}, "must be a number"),
    ({"macs_target": True}, "must be a number"),
    ({"ratio": [0.5]}, "must be a number"),
    ({"macs_target": 1.5}, "neither a fraction"),
    ({"params_target": 999}, "neither a fraction"),
    ({"macs_target": 0.0}, "must be > 0"),
    ({"latency_target": -1.0}, "must be > 0"),
    ({"ratio": 1.0}, r"\[0, 1\)"),
])
def test_bad_budgets_are_refused_before_any_work(kw, match, no_tracing):
    model = create_model("convnet_tiny")
    with pytest.raises(ConfigError, match=match):
        prune(model, torch.randn(1, 3, 8, 8), **kw)
    with pytest.raises(ConfigError, match=match):
        PruneConfig(**kw)


@pytest.mark.parametrize("inputs", [None, "x", [], 3, (torch.randn(1, 3, 8, 8), None)])
def test_example_inputs_must_be_tensors(inputs, no_tracing):
    with pytest.raises(ConfigError, match="example_inputs must be a tensor"):
        prune(create_model("convnet_tiny"), inputs, ratio=0.5)


def test_the_model_must_be_a_module(no_tracing):
    with pytest.raises(ConfigError, match="nn.Module"):
        prune("resnet20", torch.randn(1, 3, 8, 8), ratio=0.5)


def test_wrong_input_channels_names_the_expected_count(no_tracing):
    model = create_model("resnet20", in_chans=1)
    with pytest.raises(ModelError, match="expected 1 channel, got 3") as err:
        prune(model, torch.randn(2, 3, 28, 28), macs_target=0.5)
    assert "in_chans=3" in str(err.value) and "node" not in str(err.value)
    with pytest.raises(ModelError, match="4-d batch"):
        prune(model, torch.randn(1, 28, 28), macs_target=0.5)


def test_an_absolute_target_above_the_model_is_refused_and_a_fraction_of_one_keeps_everything():
    model = create_model("convnet_tiny").eval()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ConfigError, match="absolute count"):
        prune(model, x, macs_target=1e12)
    same = prune(model, x, macs_target=1.0)
    torch.testing.assert_close(same(x), model(x))


def test_every_refusal_is_a_slimkit_error_with_no_raw_type_errors(no_tracing):
    model = create_model("convnet_tiny")
    bad = [dict(ratio="half"), dict(macs_target=None), dict(macs_target=float("nan"), ratio=0.5),
           dict(round_to="fast", ratio=0.5), dict(importance="l3", ratio=0.5)]
    for kw in bad:
        with pytest.raises(SlimkitError):
            prune(model, torch.randn(1, 3, 8, 8), **kw)


def test_unknown_ignored_layer_is_refused_before_tracing(no_tracing):
    with pytest.raises(ConfigError, match="ignored_layers"):
        prune(create_model("convnet_tiny"), torch.randn(1, 3, 8, 8), ratio=0.5, ignored_layers=["nope"])
    with pytest.raises(ConfigError, match="ignored_layers"):
        prune(create_model("convnet_tiny"), torch.randn(1, 3, 8, 8), ratio=0.5, ignored_layers=[nn.ReLU()])


def test_a_vit_at_another_input_size_names_the_size_it_was_built_for(no_tracing):
    from tests.profile.test_counting import _vit_built_for_32

    with pytest.raises(ModelError, match="built for 32x32 inputs .* got 16x16"):
        prune(_vit_built_for_32(), torch.randn(1, 3, 16, 16), ratio=0.3)
