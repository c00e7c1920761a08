"""The MobileNet-style macro space: keys, mutations, encodings, built models (MACs by hand, pruning, fx) and searches
on a synthetic problem (every strategy must work on a space that cannot be listed)."""

import json

import numpy as np
import pytest
import torch

import slimkit
from slimkit.errors import ConfigError
from slimkit.nas import list_strategies, search
from slimkit.nas.spaces import MobileNetSpace, MobileNetSpaceConfig
from slimkit.nas.spaces.mobilenet import CHOICES
from slimkit.nas.train_problem import TrainProblem
from slimkit.profile import count_macs
from slimkit.registry import SPACES

SPACE = MobileNetSpace()
SIZES = [3, 3, 4, 3, 2]  # kernel, expansion, depth, width, block


def _samples(n, seed=0, space=SPACE):
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


def _changes(a, b):
    return [(s, c) for s in range(len(a)) for c in range(len(CHOICES)) if a[s][c] != b[s][c]]


def test_registered_and_not_listable():
    assert isinstance(SPACES.create("mobilenet"), MobileNetSpace)
    assert SPACES.meta("mobilenet")["paper"] == "MobileNetV2 / ProxylessNAS-style macro space"
    assert SPACE.enumerate() is None
    assert SPACE.size == (3 * 3 * 4 * 3 * 2) ** 5


def test_key_round_trip_and_accepted_forms():
    archs = _samples(300)
    keys = [SPACE.key(a) for a in archs]
    assert all(SPACE.from_key(k) == a for k, a in zip(keys, archs, strict=True))
    assert len(set(keys)) == len(set(archs))
    a = archs[0]
    assert SPACE.key(json.loads(json.dumps(a))) == keys[0]             # JSON lists
    assert SPACE.key(tuple(v for s in a for v in s)) == keys[0]         # the flat tuple of indices
    assert SPACE.key(keys[0]) == keys[0] and SPACE.from_key(keys[0] + " ") == a


def test_key_format():
    arch = ((0, 2, 1, 1, 0), (1, 1, 0, 0, 1), (2, 0, 3, 2, 0), (0, 0, 0, 0, 0), (2, 2, 3, 2, 1))
    key = "k3e6d2w1.0mb|k5e4d1w0.75sg|k7e3d4w1.25mb|k3e3d1w0.75mb|k7e6d4w1.25sg"
    assert SPACE.key(arch) == key and SPACE.from_key(key) == arch
    assert SPACE.decode(arch)[1] == (5, 4, 1, 0.75, "sandglass")


@pytest.mark.parametrize("bad, part", [
    ("k3e6d2w1.0mb|k5e4d1w0.75sg", "5"),                                                  # stage count
    ("k3e6d2w1.0mb|k5e4d1w0.75sg|k7e3d4w1.25mb|k3e3d1w0.75mb|k4e6d4w1.25sg", "k4e6d4w1.25sg"),  # kernel 4
    ("k3e6d2w1.0mb|k5e5d1w0.75sg|k7e3d4w1.25mb|k3e3d1w0.75mb|k7e6d4w1.25sg", "expansion"),
    ("k3e6d2w1.0mb|k5e4d1w0.75sg|k7e3d9w1.25mb|k3e3d1w0.75mb|k7e6d4w1.25sg", "k7e3d9w1.25mb"),
    ("k3e6d2w1.0mb|k5e4d1w0.5sg|k7e3d4w1.25mb|k3e3d1w0.75mb|k7e6d4w1.25sg", "width"),
    ("k3e6d2w1.0mb|k5e4d1w0.75xx|k7e3d4w1.25mb|k3e3d1w0.75mb|k7e6d4w1.25sg", "block"),
    ("k3e6d2w1.0mb|garbage|k7e3d4w1.25mb|k3e3d1w0.75mb|k7e6d4w1.25sg", "garbage"),
])
def test_from_key_names_the_bad_part(bad, part):
    with pytest.raises(ConfigError, match=part):
        SPACE.from_key(bad)


def test_bad_architectures_and_configs():
    for bad in [((0, 0, 0, 0, 0),) * 4, ((3, 0, 0, 0, 0),) + ((0,) * 5,) * 4, (1, 2, 3), None]:
        with pytest.raises(ConfigError, match="mobilenet architecture|key"):
            SPACE.key(bad)
    for kw in [{"strides": (1, 2)}, {"kernels": (3, 4)}, {"blocks": ("mbconv", "resnet")}, {"depths": ()},
               {"strides": (1, 3, 2, 2, 1)}, {"nope": 1}]:
        with pytest.raises(ConfigError):
            MobileNetSpace(**kw)
    with pytest.raises(ConfigError, match="unknown build option"):
        SPACE.build(_samples(1)[0], channels=8)


def test_mutate_changes_exactly_one_choice():
    rng = np.random.default_rng(1)
    for arch in _samples(20, seed=2):
        nb = set(SPACE.neighbours(arch))
        for _ in range(10):
            child = SPACE.mutate(arch, rng)
            assert len(_changes(arch, child)) == 1 and child in nb
            assert SPACE.from_key(SPACE.key(child)) == child  # stays in the space


@pytest.mark.parametrize("space, sizes", [
    (SPACE, SIZES),
    (MobileNetSpace(widths=(8, 16), strides=(1, 2), kernels=(3,), depths=(1, 2), blocks=("mbconv",)), [1, 3, 2, 3, 1]),
])
def test_neighbours_are_all_one_choice_changes(space, sizes):
    arch = _samples(1, seed=3, space=space)[0]
    nb = space.neighbours(arch)
    assert len(nb) == len(set(nb)) == space.num_stages * sum(n - 1 for n in sizes)
    assert all(len(_changes(arch, n)) == 1 for n in nb)


def test_encodings():
    archs = _samples(50, seed=4)
    onehot = SPACE.encode_many(archs, "onehot")
    assert onehot.shape == (50, 5 * sum(SIZES)) == (50, 75) and onehot.dtype == np.float32
    bounds = np.cumsum([0, *SIZES])
    for v, arch in zip(onehot, archs, strict=True):
        per_stage = v.reshape(5, -1)
        for s in range(5):
            for c in range(5):
                part = per_stage[s, bounds[c]:bounds[c + 1]]
                assert part.sum() == 1 and int(part.argmax()) == arch[s][c]
    np.testing.assert_array_equal(onehot[7], SPACE.encode(archs[7], "onehot"))
    index = SPACE.encode_many(archs, "index")
    assert index.shape == (50, 25)
    np.testing.assert_array_equal(index[0], np.array(archs[0], np.float32).ravel())
    assert SPACE.encode_many([], "onehot").shape == (0, 75)
    with pytest.raises(ConfigError, match="encoding"):
        SPACE.encode(archs[0], "path")


@pytest.mark.parametrize("shape, small", [((1, 28, 28), True), ((3, 32, 32), True), ((3, 64, 64), False)])
def test_build_follows_the_model_interface(shape, small):
    arch = _samples(1, seed=5)[0]
    model = SPACE.build(arch, num_classes=7, in_chans=shape[0], small_input=small, base_width=0.5).eval()
    x = torch.randn(2, *shape)
    feats = model.forward_features(x)
    stride = 8 if small else 32
    assert feats.shape == (2, model.num_features, -(-shape[1] // stride), -(-shape[2] // stride))  # ceil
    assert model(x).shape == (2, 7) and model.num_classes == 7
    assert model.get_classifier() is model.head and model.forward_head(feats, pre_logits=True).shape[1] == 128
    torch.testing.assert_close(torch.fx.symbolic_trace(model)(x), model(x))


def _conv(k, cin, cout, hw, groups=1):
    return k * k * cin // groups * cout * hw


def test_macs_match_a_hand_count():
    """One stage of 8 channels (expansion 2) on 8x8 grey images at stride 1, head 16: every conv by hand."""
    space = MobileNetSpace(widths=(8,), strides=(1,), stem_width=8, head_width=16, kernels=(3, 5), expansions=(2,),
                           depths=(1, 2), width_mults=(1.0,))
    hw, head = 64, 8 * 16 * 64 + 16 * 10
    stem = _conv(3, 1, 8, hw)
    for k_i, k in enumerate((3, 5)):
        # mbconv, depth 2: (expand 8->16, dw k, project 16->8) twice, head conv reads 8 channels
        mb = stem + 2 * (_conv(1, 8, 16, hw) + _conv(k, 16, 16, hw, 16) + _conv(1, 16, 8, hw)) + head
        model = space.build(((k_i, 0, 1, 0, 0),), in_chans=1)
        assert count_macs(model, (1, 8, 8)) == mb
        # sandglass, depth 2: wide 16, bottleneck 8. Block 1 (8 -> 16): dw k on 8, reduce 8->8, expand 8->16,
        # dw k; block 2: dw k, reduce 16->8, expand 8->16, dw k; the head conv reads 16 channels
        sg = (stem + _conv(k, 8, 8, hw, 8) + _conv(1, 8, 8, hw) + _conv(1, 8, 16, hw) + _conv(k, 16, 16, hw, 16)
              + 2 * _conv(k, 16, 16, hw, 16) + _conv(1, 16, 8, hw) + _conv(1, 8, 16, hw)
              + _conv(1, 16, 16, hw) + 16 * 10)
        model = space.build(((k_i, 0, 1, 0, 1),), in_chans=1)
        assert count_macs(model, (1, 8, 8)) == sg


@pytest.mark.parametrize("choice", [0, 1, 2, 3])  # kernel, expansion, depth, width
@pytest.mark.parametrize("block", [0, 1])
@pytest.mark.parametrize("stage", [0, 2, 4])
def test_macs_grow_with_each_choice(choice, block, stage):
    """Even at a quarter width, where rounding to channel multiples would merge width choices."""
    base = [[1, 1, 1, 1, block] for _ in range(5)]
    macs = []
    for v in range(SIZES[choice]):
        arch = [list(s) for s in base]
        arch[stage][choice] = v
        macs.append(count_macs(SPACE.build(arch, in_chans=1, base_width=0.25), (1, 28, 28)))
    assert all(a < b for a, b in zip(macs, macs[1:], strict=False)), macs


def test_channel_rounding_keeps_choices_apart():
    cfg = MobileNetSpaceConfig()
    assert cfg.channels(16, cfg.width_mults) == {0.75: 12, 1.0: 16, 1.25: 20}
    assert cfg.channels(24, cfg.width_mults) == {0.75: 20, 1.0: 24, 1.25: 32}
    assert list(cfg.channels(4, cfg.width_mults).values()) == [4, 8, 12]  # 3, 4, 5 all round to 4: bumped


@pytest.mark.parametrize("block", ["mb", "sg"])
def test_prune_half_the_channels(block):
    arch = SPACE.from_key("|".join(f"k{k}e6d2w1.0{block}" for k in (3, 5, 3, 7, 3)))
    model = SPACE.build(arch, base_width=0.5).eval()
    x = torch.randn(1, 3, 32, 32)
    small = slimkit.prune(model, x, ratio=0.5)
    assert small(x).shape == (1, 10)
    assert count_macs(small, x) < 0.6 * count_macs(model, x)


class Synthetic:
    """score = a fixed random linear function of the one-hot encoding; cost = total depth. No training."""

    metric = "acc"

    def __init__(self, seed=0):
        self.space = MobileNetSpace()
        self.w = np.random.default_rng(seed).normal(size=75)

    def evaluate(self, arch):
        return {"acc": float(self.w @ self.space.encode(arch))}

    def costs(self, arch):
        return {"depth": float(sum(s.depth for s in self.space.decode(arch)))}


# tiny settings: the model-based strategies fit their predictor after `init` trials, on a pool of 300 samples
TINY = {"evolution": {"population": 4, "tournament": 2}, "local": {"init": 3},
        "bo": {"init": 3, "pool": 300}, "weaknas": {"init": 3, "batch": 2, "top_m": 4, "pool": 300,
                                                    "predictor": "ridge"}}


@pytest.mark.parametrize("name", list_strategies())
def test_every_strategy_searches_the_unlisted_space(name):
    prob = Synthetic(1)
    res = search(prob, name, queries=8, seed=0, constraints=["depth <= 12"], **TINY.get(name, {}))
    keys = [t.key for t in res.history]
    assert len(keys) == len(set(keys)) == 8
    assert all(t.ok and t.feasible and prob.costs(t.key)["depth"] <= 12 for t in res.history)
    assert res.best is not None and res.best.score == max(t.score for t in res.history)


@pytest.mark.parametrize("name", ["random", "evolution", "weaknas"])
def test_short_search_is_reproducible(name):
    runs = [search(Synthetic(2), name, queries=3, seed=0, **TINY.get(name, {})) for _ in range(2)]
    assert [t.key for t in runs[0].history] == [t.key for t in runs[1].history]
    assert len(runs[0].history) == 3


def test_train_problem_trains_a_candidate():
    """One real evaluation: 200 images, one epoch, a quarter-width candidate (about a second)."""
    prob = TrainProblem(MobileNetSpace(), data="digits", limit=200, epochs=1, latency=True,
                        build_kwargs={"base_width": 0.25})
    arch = "k3e3d1w0.75mb|k5e3d1w0.75sg|k3e3d1w0.75mb|k3e3d1w0.75mb|k7e3d1w0.75mb"
    costs = prob.costs(arch)
    assert set(costs) == {"params_M", "macs_M", "latency_ms"} and min(costs.values()) > 0
    assert costs["macs_M"] == count_macs(prob.build(arch), (1, 8, 8)) / 1e6
    out = prob.evaluate(arch)
    assert 0.0 <= out["val_acc"] <= 1.0 and 0.0 <= out["test_acc"] <= 1.0


def test_config_object_and_keywords_agree():
    cfg = MobileNetSpaceConfig(widths=[8, 16], strides=[1, 2], depths=[1])
    assert cfg.widths == (8, 16) and MobileNetSpace(cfg).config == MobileNetSpace(widths=(8, 16), strides=(1, 2),
                                                                                   depths=(1,)).config
    with pytest.raises(ConfigError, match="either"):
        MobileNetSpace(cfg, depths=(1,))
