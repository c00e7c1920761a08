import csv
import itertools

import numpy as np
import pytest
import torch

from slimkit.errors import ConfigError
from slimkit.nas.spaces.nb201 import OPS, NB201Space, cell_to_str, str_to_cell
from slimkit.profile import count_params

SPACE = NB201Space()


def test_cell_string_round_trip_over_whole_space():
    cells = SPACE.enumerate()
    assert len(cells) == 5**6 == len({SPACE.key(c) for c in cells})
    assert all(str_to_cell(cell_to_str(c)) == c for c in cells[::97])


def test_cell_string_format():
    s = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    assert str_to_cell(s) == (3, 3, 3, 1, 3, 2) and cell_to_str((3, 3, 3, 1, 3, 2)) == s
    for bad in ("|conv~0|+|a~0|b~1|+|c~0|d~1|e~2|", "|none~0|", "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"):
        with pytest.raises(ConfigError):
            str_to_cell(bad)


def test_mutate_and_neighbours_change_exactly_one_edge():
    rng = np.random.default_rng(0)
    cell = SPACE.sample(rng)
    nb = SPACE.neighbours(cell)
    assert len(nb) == 6 * 4 == len(set(nb))
    assert all(sum(a != b for a, b in zip(cell, n, strict=False)) == 1 for n in nb)
    for _ in range(50):
        m = SPACE.mutate(cell, rng)
        assert m in nb


def test_onehot_encoding():
    v = SPACE.encode((0, 1, 2, 3, 4, 0), "onehot").reshape(6, 5)
    assert (v.sum(1) == 1).all() and [int(i) for i in v.argmax(1)] == [0, 1, 2, 3, 4, 0]


def _paths_by_hand(cell):
    """Op-name sequences of the four input->output paths, skipping those with a `none` edge."""
    e = dict(zip([(0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3)], cell, strict=False))
    seqs = []
    for path in [(0, 3), (0, 1, 3), (0, 2, 3), (0, 1, 2, 3)]:
        ops = [OPS[e[(a, b)]] for a, b in zip(path, path[1:], strict=False)]
        if "none" not in ops:
            seqs.append(tuple(ops))
    return seqs


def test_path_encoding_counts_paths():
    real = OPS[1:]
    feats = [s for n in (1, 2, 3) for s in itertools.product(real, repeat=n)]
    for cell in [(3, 3, 3, 1, 3, 2), (0, 0, 0, 0, 0, 0), (1, 1, 1, 1, 1, 1), (0, 2, 4, 3, 0, 1)]:
        expected = np.zeros(len(feats))
        for seq in _paths_by_hand(cell):
            expected[feats.index(seq)] += 1
        np.testing.assert_array_equal(SPACE.encode(cell, "path"), expected)


def test_build_matches_benchmark_parameter_counts(nb201_dir):
    with open(nb201_dir / "nb201_cifar10_200ep.csv") as f:
        rows = list(itertools.islice(csv.DictReader(f), 0, 400, 80))
    for row in rows:  # the benchmark's params_M counts the 16-channel, 5-cell network with a 10-class head
        model = SPACE.build(row["cellstr"], num_classes=10)
        assert count_params(model) / 1e6 == pytest.approx(float(row["params_M"]), abs=1e-6)


def test_built_network_trains_on_grey_28x28():
    model = SPACE.build((3, 1, 2, 4, 0, 3), num_classes=10, in_chans=1, channels=8, cells_per_stage=1)
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10)
    out.sum().backward()


def test_bad_architecture_is_named():
    with pytest.raises(ConfigError, match="6 op indices"):
        SPACE.encode((1, 2, 3))
    with pytest.raises(ConfigError, match="unknown encoding"):
        SPACE.encode((0,) * 6, "graph")
