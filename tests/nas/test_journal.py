"""The search journal: one appended line per trial (constant cost, not a rewrite of the history), replayed exactly on
resume, a cut last line dropped, a legacy whole-state file continued."""

import json

import pytest

from slimkit import fileio
from slimkit.errors import CheckpointError
from slimkit.nas import search
from slimkit.nas.journal import JOURNAL, LEGACY_STATE, read_search_state
from tests.nas.test_strategies import Additive


class Killed(BaseException):
    pass


def test_each_trial_appends_one_line_of_bounded_size(tmp_path, monkeypatch):
    sizes = []
    monkeypatch.setattr(fileio, "fault_hook", lambda path, when: sizes.append(path.stat().st_size)
                        if when == "after" and path.name == JOURNAL else None)
    search(Additive(1), "evolution", queries=300, seed=0, run_dir=tmp_path, population=20)
    growth = [b - a for a, b in zip(sizes, sizes[1:], strict=False)]
    assert len(sizes) == 301 and len((tmp_path / JOURNAL).read_text().splitlines()) == 301
    # the bytes written per trial do not grow with the history (a rewrite would write ~300x more at the end)
    assert max(growth[-50:]) < 2 * max(growth[:50])


@pytest.mark.parametrize("name", ["random", "evolution", "local", "weaknas"])
def test_a_search_killed_at_any_trial_resumes_the_same_stream(tmp_path, monkeypatch, name):
    opts = {"weaknas": {"pool": 500, "predictor": "ridge", "init": 5, "batch": 3}}.get(name, {})
    full = search(Additive(2), name, queries=30, seed=3, **opts)
    for kill_at in (1, 7, 19):
        run_dir = tmp_path / f"k{kill_at}"
        count = {"n": 0}

        def hook(path, when, kill_at=kill_at, count=count):
            if path.name == JOURNAL and when == "after":
                count["n"] += 1
                if count["n"] == kill_at + 1:  # the header, then kill_at trials
                    raise Killed()
        monkeypatch.setattr(fileio, "fault_hook", hook)
        with pytest.raises(Killed):
            search(Additive(2), name, queries=30, seed=3, run_dir=run_dir, **opts)
        monkeypatch.setattr(fileio, "fault_hook", None)
        resumed = search(Additive(2), name, queries=30, seed=3, run_dir=run_dir, resume=True, **opts)
        assert [t.key for t in resumed.history] == [t.key for t in full.history], (name, kill_at)
        assert [t.score for t in resumed.history] == [t.score for t in full.history]


def test_a_cut_last_line_is_dropped_and_the_search_goes_on(tmp_path):
    full = search(Additive(0), "random", queries=12, seed=1)
    search(Additive(0), "random", queries=8, seed=1, run_dir=tmp_path)
    path = tmp_path / JOURNAL
    text = path.read_text()
    path.write_text(text[: -len(text.splitlines()[-1]) // 2 - 1])  # the 8th trial's line, cut in half
    assert len(read_search_state(tmp_path)["state"]["trials"]) == 7
    resumed = search(Additive(0), "random", queries=12, seed=1, run_dir=tmp_path, resume=True)
    assert [t.key for t in resumed.history] == [t.key for t in full.history]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_corrupt_middle_line_is_refused(tmp_path):
    search(Additive(0), "random", queries=5, seed=0, run_dir=tmp_path)
    lines = (tmp_path / JOURNAL).read_text().splitlines()
    lines[2] = "{broken"
    (tmp_path / JOURNAL).write_text("\n".join(lines) + "\n")
    with pytest.raises(CheckpointError, match="line 3 is corrupt"):
        search(Additive(0), "random", queries=8, seed=0, run_dir=tmp_path, resume=True)


def test_a_legacy_state_file_is_continued_as_a_journal(tmp_path):
    full = search(Additive(0), "evolution", queries=20, seed=2, population=8, tournament=3)
    search(Additive(0), "evolution", queries=11, seed=2, run_dir=tmp_path, population=8, tournament=3)
    saved = read_search_state(tmp_path)  # write what an older slimkit kept: one whole-state file
    (tmp_path / LEGACY_STATE).write_text(json.dumps(saved | {"state": {**saved["state"], "saved_at": 0}}))
    (tmp_path / JOURNAL).unlink()
    resumed = search(Additive(0), "evolution", queries=20, seed=2, run_dir=tmp_path, resume=True, population=8,
                     tournament=3)
    assert [t.key for t in resumed.history] == [t.key for t in full.history]
    assert not (tmp_path / LEGACY_STATE).exists() and (tmp_path / JOURNAL).is_file()
