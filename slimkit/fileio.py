"""Crash-safe files: every file slimkit writes is whole or absent, and a set of files commits as one unit.

- `atomic_write(path, data)`: bytes, text, or a writer `fn(tmp_path)` (safetensors, ONNX, matplotlib) goes to a
  temporary file beside `path` (same suffix, so format-by-suffix writers work), is flushed to disk and renamed over
  `path`. A kill at any instant leaves the old file or the new one, never a mix.
- `append_line(path, line)`: a log line; logs are rewritten whole from the checkpoint when a run resumes.
- `commit_files(directory, files, manifest)`: several files that belong together (a checkpoint's weights, optimizer
  state and JSON state) are written under fresh names, then one manifest naming them is written atomically: the
  manifest is the commit. A kill before it leaves the previous unit in force; files no manifest names are removed
  at the next commit. `read_manifest(directory)` returns the manifest and the paths of its files.

This module imports nothing from slimkit, so every subpackage may use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "append_line", "commit_files", "read_manifest", "link_or_copy", "remove_stale_temporaries",
           "file_sha256"]

Writer = Callable[[Path], Any]
_TMP = ".tmp-"

# Fault injection (tests): called as fault_hook(path, "before" | "after") around every commit of a file, so a test
# can stop a command at each write as a kill would (tests/test_fileio.py, tests/jobs/test_crash_resume.py).
fault_hook: Callable[[Path, str], None] | None = None


def _event(path: Path, when: str) -> None:
    if fault_hook is not None:
        fault_hook(path, when)


def _tmp_name(path: Path) -> Path:
    # hidden, unique per process, and with the target's suffix (matplotlib and numpy choose formats by suffix)
    return path.with_name(f".{path.stem}{_TMP}{os.getpid()}-{secrets.token_hex(3)}{path.suffix}")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not possible on every platform / filesystem
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def remove_stale_temporaries(path: str | Path) -> None:
    """Delete temporary files an interrupted `atomic_write` of `path` left behind."""
    p = Path(path)
    if p.parent.is_dir():
        for tmp in p.parent.glob(f".{p.stem}{_TMP}*{p.suffix}"):
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str | Writer) -> Path:
    """Write `path` whole or not at all (see the module docstring); returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = _tmp_name(path)
    try:
        if callable(data):
            data(tmp)
            if not tmp.exists():
                raise FileNotFoundError(f"the writer for {path} did not write its temporary file {tmp}")
            _fsync_file(tmp)
        else:
            raw = data.encode() if isinstance(data, str) else bytes(data)
            with tmp.open("wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _event(path, "before")  # a kill here leaves the temporary file, removed by the next write of `path`
    os.replace(tmp, path)
    tmp.unlink(missing_ok=True)  # rename() leaves both names when they are links to one file already
    _fsync_dir(path.parent)
    _event(path, "after")
    return path


def append_line(path: str | Path, line: str) -> None:
    """Append one line to a log (e.g. metrics.jsonl). Not atomic: a log a kill may cut is rewritten whole from the
    last checkpoint when the run resumes."""
    _event(Path(path), "before")
    with Path(path).open("a") as f:
        f.write(line.rstrip("\n") + "\n")
    _event(Path(path), "after")


def link_or_copy(src: Path, dst: Path) -> None:
    """`dst` becomes a hard link to `src` (no extra disk), or a copy where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _versioned(name: str) -> str:
    p = Path(name)
    return f"{p.stem}-{secrets.token_hex(4)}{p.suffix}"


def commit_files(directory: str | Path, files: Mapping[str, Writer | Path], manifest: Mapping[str, Any],
                 manifest_name: str = "state.json") -> Path:
    """Write `files` (logical name -> writer, or an existing file to hard-link) and `manifest` as one unit.

    The manifest is saved with a `"files"` entry mapping each logical name to the file that holds it; files of
    `directory` that the new manifest does not name (an older unit, or one a kill interrupted) are removed after
    the commit. Returns `directory`.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    named: dict[str, str] = {}
    for logical, source in files.items():
        if isinstance(source, Path) and source.parent.resolve() == d.resolve() and source.is_file():
            named[logical] = source.name  # already in the folder (e.g. kept from the previous unit)
            continue
        target = d / _versioned(logical)
        if isinstance(source, Path):
            link_or_copy(source, target)
            _fsync_file(target)
        else:
            atomic_write(target, source)
        named[logical] = target.name
    atomic_write(d / manifest_name, json.dumps({**manifest, "files": named}))
    keep = set(named.values()) | {manifest_name}
    for p in d.iterdir():
        if p.name not in keep and p.is_file():
            p.unlink(missing_ok=True)
    return d


def read_manifest(directory: str | Path, manifest_name: str = "state.json") -> tuple[dict[str, Any], dict[str, Path]]:
    """The manifest of the last committed unit and its files by logical name (a manifest written before units
    existed names no files: then each logical name is its own file name). Raises FileNotFoundError / ValueError
    (callers turn them into SlimkitErrors naming the fix)."""
    d = Path(directory)
    manifest = json.loads((d / manifest_name).read_text())
    if not isinstance(manifest, dict):
        raise ValueError(f"{d / manifest_name} does not hold a JSON object")
    names = manifest.get("files")
    paths = {k: d / v for k, v in names.items()} if isinstance(names, dict) else {}
    return manifest, paths


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (read in chunks), as hex."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
