"""The search job: several strategies x seeds on the NB201 tables, resume, summary numbers, training search."""

import json
from pathlib import Path

import numpy as np
import pytest

from slimkit.cli.main import main
from slimkit.errors import CheckpointError, ConfigError
from slimkit.jobs.search import SearchJobConfig, run
from slimkit.nas.journal import read_search_state

NB201 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nasbench201"
needs_tables = pytest.mark.skipif(not (NB201 / "nb201_cifar10_200ep.csv").is_file(), reason="NB201 tables missing")


@needs_tables
def test_cli_search_writes_history_summary_and_plot(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["search", "--table", str(NB201 / "nb201_cifar10_200ep.csv"), "--report", "cifar10_test_200ep",
            "-s", "evolution", "-s", "random", "--budget", "30", "--seeds", "2", "--constraint", "params_M <= 0.5",
            "--out", str(out)]
    assert main(args) == 0
    assert "slimkit search" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    assert set(history) == {"evolution", "random"} and len(history["random"]) == 2
    for row in summary["rows"]:  # recompute the summary from the history
        runs = history[row["strategy"]]
        bests = [max(t["score"] for t in r["history"]) for r in runs]
        assert row["best"] == pytest.approx(np.mean(bests), abs=1e-4)
        assert all(t["costs"]["params_M"] <= 0.5 for r in runs for t in r["history"])
    assert (out / "best_so_far.png").stat().st_size > 0
    assert main(args) == 2  # the run folder exists: refuse to overwrite without --resume


@needs_tables
def test_resume_extends_a_finished_search(tmp_path):
    table = (str(NB201 / "nb201_cifar10_200ep.csv"),)
    cfg = SearchJobConfig(table=table, strategies=("weaknas",), queries=20, out=str(tmp_path))
    run(cfg)
    with pytest.raises(CheckpointError, match="resume"):
        run(cfg)
    longer = SearchJobConfig(table=table, strategies=("weaknas",), queries=35, out=str(tmp_path))
    run(longer, resume=True)
    fresh = SearchJobConfig(table=table, strategies=("weaknas",), queries=35, out=str(tmp_path / "fresh"))
    run(fresh)
    keys = [[t["key"] for t in json.loads((d / "history.json").read_text())["weaknas"][0]["history"]]
            for d in (tmp_path, tmp_path / "fresh")]
    assert keys[0] == keys[1] and len(keys[0]) == 35


def test_missing_tables_are_explained(tmp_path):
    with pytest.raises(ConfigError, match="--table"):
        run(SearchJobConfig(out=str(tmp_path)))


def test_training_search_on_digits(tmp_path):
    """Real training: 3 candidates, each trained for one epoch on digits; costs computed before training."""
    cfg = SearchJobConfig(benchmark="none", data="digits", limit=None, epochs=1, strategies=("random",), queries=3,
                          space_kwargs={"channels": 4, "cells_per_stage": 1}, constraints=("macs_M <= 0.2",),
                          out=str(tmp_path))
    rows = run(cfg)
    runs = json.loads((tmp_path / "history.json").read_text())["random"][0]["history"]
    assert len(runs) == 3 and all(0.0 <= t["score"] <= 1.0 and t["costs"]["macs_M"] <= 0.2 for t in runs)
    assert rows[0]["best"] == pytest.approx(max(t["score"] for t in runs), abs=1e-4)


@needs_tables
def test_cli_features_go_to_the_predictor_strategies_only(tmp_path, capsys):
    table = str(NB201 / "nb201_cifar10_200ep.csv")
    out = tmp_path / "f"
    args = ["search", "--table", table, "-s", "weaknas", "-s", "evolution", "--feature", "naswot_score_v1",
            "--feature", "params_M", "--queries", "25", "--out", str(out)]
    assert main(args) == 0
    history = json.loads((out / "history.json").read_text())
    assert len(history["weaknas"][0]["history"]) == len(history["evolution"][0]["history"]) == 25
    plain = run(SearchJobConfig(table=(table,), strategies=("evolution", "weaknas"), queries=25,
                                out=str(tmp_path / "plain")))
    assert plain[0]["strategy"] == "evolution"
    keys = lambda h, s: [t["key"] for t in h[s][0]["history"]]  # noqa: E731
    plain_history = json.loads((tmp_path / "plain" / "history.json").read_text())
    assert keys(history, "evolution") == keys(plain_history, "evolution")  # evolution ignores features
    assert keys(history, "weaknas") != keys(plain_history, "weaknas")  # weaknas ranks with them
    with pytest.raises(ConfigError, match="none of the strategies"):
        SearchJobConfig(table=(table,), strategies=("evolution",), features=("params_M",))
    assert main(["search", "--table", table, "--feature", "cifar10valid_xvalid_200ep", "--budget", "12",
                 "--out", str(tmp_path / "leak")]) == 2
    assert "objective" in capsys.readouterr().err


def test_training_search_with_the_naswot_feature(tmp_path):
    """WeakNAS by training on digits with NASWOT (computed on the digits images) as a predictor input."""
    cfg = SearchJobConfig(benchmark="none", data="digits", limit=300, epochs=1, strategies=("weaknas",), queries=4,
                          space_kwargs={"channels": 4, "cells_per_stage": 1}, features=("naswot",),
                          strategy_options={"weaknas": {"init": 3, "batch": 1, "top_m": 5, "pool": 8}},
                          out=str(tmp_path))
    run(cfg)
    runs = json.loads((tmp_path / "history.json").read_text())["weaknas"][0]["history"]
    assert len(runs) == 4 and len({t["key"] for t in runs}) == 4
    saved = read_search_state(tmp_path / "weaknas" / "seed_0")
    assert "naswot" in saved["meta"]["options"]["features"]


@needs_tables
def test_a_run_folder_saved_with_budget_resumes_under_queries(tmp_path):
    """Run folders written before `budget` became `queries` keep resuming (and may grow)."""
    table = (str(NB201 / "nb201_cifar10_200ep.csv"),)
    run(SearchJobConfig(table=table, strategies=("random",), queries=6, out=str(tmp_path)))
    saved = tmp_path / "config.yaml"
    saved.write_text(saved.read_text().replace("queries:", "budget:"))
    assert main(["search", "--out", str(tmp_path), "--budget", "9", "--resume"]) == 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["random"][0]["history"]) == 9
