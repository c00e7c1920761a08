"""Crash-safe files: atomic_write leaves the old or the new file; commit_files commits a set of files as one unit."""

import json

import pytest

from slimkit import fileio


class Killed(BaseException):
    """Stands for a kill: not an Exception, so no `except Exception` handler can swallow it."""


@pytest.fixture
def kill_at(monkeypatch):
    def arm(name, when):
        def hook(path, w):
            if path.name.startswith(name) and w == when:
                raise Killed(path)
        monkeypatch.setattr(fileio, "fault_hook", hook)
    return arm


def test_atomic_write_text_bytes_and_writer(tmp_path):
    fileio.atomic_write(tmp_path / "a.txt", "hello")
    fileio.atomic_write(tmp_path / "b.bin", b"\x00\x01")
    fileio.atomic_write(tmp_path / "sub" / "c.json", lambda p: p.write_text("{}"))
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "sub" / "c.json").read_text()) == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "sub"]  # no temporaries left


def test_writer_sees_the_target_suffix(tmp_path):
    seen = []
    fileio.atomic_write(tmp_path / "plot.png", lambda p: (seen.append(p.suffix), p.write_bytes(b"x")))
    assert seen == [".png"]


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_kill_leaves_the_old_or_the_new_file_whole(tmp_path, kill_at, when):
    path = tmp_path / "f.txt"
    fileio.atomic_write(path, "old")
    kill_at("f", when)
    with pytest.raises(Killed):
        fileio.atomic_write(path, "new")
    assert path.read_text() == ("old" if when == "before" else "new")


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    fileio.atomic_write(path, "old")

    def bad(p):
        p.write_text("half")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        fileio.atomic_write(path, bad)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_stale_temporaries_of_a_killed_write_are_removed_by_the_next_write(tmp_path, kill_at):
    path = tmp_path / "f.txt"
    kill_at("f", "before")
    with pytest.raises(Killed):
        fileio.atomic_write(path, "x")
    assert len(list(tmp_path.iterdir())) == 1 and not path.exists()  # the temporary a kill leaves
    fileio.fault_hook = None
    fileio.atomic_write(path, "y")
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def _unit(d, tag):
    return fileio.commit_files(d, {"w.bin": lambda p: p.write_text(f"w{tag}"), "o.bin": lambda p: p.write_text(
        f"o{tag}")}, {"epoch": tag})


def _read(d):
    state, files = fileio.read_manifest(d)
    return state["epoch"], files["w.bin"].read_text(), files["o.bin"].read_text()


@pytest.mark.parametrize("name", ["w-", "o-", "state"])
@pytest.mark.parametrize("when", ["before", "after"])
def test_a_unit_commits_whole_whatever_file_the_kill_hits(tmp_path, kill_at, name, when):
    _unit(tmp_path, 2)
    kill_at(name, when)
    with pytest.raises(Killed):
        _unit(tmp_path, 3)
    committed = name == "state" and when == "after"
    assert _read(tmp_path) == ((3, "w3", "o3") if committed else (2, "w2", "o2"))
    fileio.fault_hook = None
    _unit(tmp_path, 4)  # the next commit removes what the interrupted one left
    assert _read(tmp_path) == (4, "w4", "o4") and len(list(tmp_path.iterdir())) == 3


def test_a_unit_can_keep_a_file_of_the_previous_unit(tmp_path):
    _unit(tmp_path, 1)
    best = fileio.read_manifest(tmp_path)[1]["w.bin"]
    fileio.commit_files(tmp_path, {"best.bin": best, "w.bin": lambda p: p.write_text("w2")}, {"epoch": 2})
    _, files = fileio.read_manifest(tmp_path)
    assert files["best.bin"] == best and best.read_text() == "w1" and files["w.bin"].read_text() == "w2"


def test_replacing_a_file_with_a_link_to_itself_leaves_no_temporary(tmp_path):
    src = tmp_path / "a.bin"
    src.write_bytes(b"x")
    fileio.atomic_write(tmp_path / "b.bin", lambda tmp: fileio.link_or_copy(src, tmp))
    fileio.atomic_write(tmp_path / "b.bin", lambda tmp: fileio.link_or_copy(src, tmp))  # b is a itself already
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.bin"]
