import csv

import numpy as np
import pytest

from slimkit.errors import ConfigError, DataError, DataNotFoundError
from slimkit.nas import NB201Benchmark


def test_query_equals_the_csv_row(bench, nb201_dir):
    with open(nb201_dir / "nb201_cifar10_200ep.csv") as f:
        rows = {int(r["arch"]): r for r in csv.DictReader(f)}
    with open(nb201_dir / "nb201_latency_ms.csv") as f:
        lat = {int(r["arch"]): r for r in csv.DictReader(f)}
    for i in (0, 1, 6111, 15624):
        r = rows[i]
        m = bench.evaluate(r["cellstr"])
        assert m["arch"] == i
        assert m["cifar10valid_xvalid_200ep"] == float(r["cifar10valid_xvalid_200ep"])
        assert bench.costs(r["cellstr"])["pixel3"] == float(lat[i]["pixel3"])
    assert len(bench) == 15625


def test_optimum_is_arch_6111(bench):
    best, keys = bench.optimum()
    assert best == pytest.approx(91.6067, abs=1e-3) and len(keys) == 1
    assert bench.evaluate(keys[0])["arch"] == 6111
    best_test, keys_test = bench.optimum("cifar10_test_200ep")  # two architectures tie on the test column
    assert len(keys_test) == 2


def test_nan_cells_are_kept_as_nan(nb201_dir):
    b = NB201Benchmark.from_csv(nb201_dir / "nb201_cifar10_200ep.csv", metric="naswot_score_v1")
    assert np.isnan(b.columns["naswot_score_v1"]).sum() > 0


def test_errors_name_the_problem(tmp_path, nb201_dir):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        NB201Benchmark.from_csv(tmp_path / "nope.csv", metric="x")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="arch"):
        NB201Benchmark.from_csv(bad, metric="x")
    with pytest.raises(ConfigError, match="cifar10_test_200ep"):
        NB201Benchmark.from_csv(nb201_dir / "nb201_cifar10_200ep.csv", metric="accuracy")
    small = tmp_path / "small.csv"
    small.write_text("arch,cellstr,acc\n0,|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,10\n")
    with pytest.raises(DataError, match="different architectures"):
        NB201Benchmark.from_csv([small, nb201_dir / "nb201_latency_ms.csv"], metric="acc")


def test_small_user_table(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arch,cellstr,acc,lat\n"
                 "7,|skip_connect~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|,55.5,3\n"
                 "3,|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|nor_conv_3x3~2|,60.0,4\n")
    b = NB201Benchmark.from_csv(p, metric="acc")
    assert b.query((3, 0, 0, 0, 0, 3)) == 60.0 and b.costs((1, 0, 0, 0, 0, 3)) == {"lat": 3.0}
    with pytest.raises(ConfigError, match="not in the benchmark"):
        b.query((3, 3, 3, 3, 3, 3))


def test_features_are_table_columns_and_never_the_objective(bench, nb201_dir):
    with open(nb201_dir / "nb201_cifar10_200ep.csv") as f:
        rows = {int(r["arch"]): r for r in csv.DictReader(f)}
    cells = [rows[i]["cellstr"] for i in (0, 1, 6111)]
    got = bench.features(cells, ["params_M", "pixel3"])
    assert got.shape == (3, 2)
    assert list(got[:, 0]) == [float(rows[i]["params_M"]) for i in (0, 1, 6111)]
    assert list(got[:, 1]) == [bench.costs(c)["pixel3"] for c in cells]
    with pytest.raises(ConfigError, match="objective"):
        bench.features(cells, ["cifar10valid_xvalid_200ep"])
    with pytest.raises(ConfigError, match="not in the tables"):
        bench.features(cells, ["naswot"])
