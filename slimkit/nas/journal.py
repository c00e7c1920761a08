"""The search journal: the state of a search kept as an append-only file, one JSON line per trial.

Line 1 holds the search's identity (`meta`: strategy, seed, metric, constraints, options). Each later line is one
trial with the strategy's state right after it (RNG state, proposals not yet evaluated, the strategy's own small
state); the set of architectures seen is not stored, since it is the trials plus the pending proposals. A line may
also be a whole state (`snapshot`, from a search saved before journals existed). Writing a trial costs the same at
trial 3,000 as at trial 3; replaying the lines gives exactly the state the search had, so `resume` continues the
same stream. A kill in the middle of an append leaves a partial last line, which is dropped on resume.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from slimkit.errors import CheckpointError
from slimkit.fileio import append_line, atomic_write
from slimkit.nas.strategies.base import Strategy
from slimkit.nas.trial import Trial

__all__ = ["JOURNAL", "LEGACY_STATE", "SearchJournal", "read_search_state"]

JOURNAL = "search_journal.jsonl"
LEGACY_STATE = "search_state.json"  # a whole-state file rewritten after every trial (before journals)


class SearchJournal:
    """The journal of the search in `run_dir` (see the module docstring)."""

    def __init__(self, run_dir: str | Path, meta: dict[str, Any]) -> None:
        self.dir = Path(run_dir)
        self.path = self.dir / JOURNAL
        self.meta = meta

    def exists(self) -> bool:
        return self.path.is_file() or (self.dir / LEGACY_STATE).is_file()

    def start(self, state: dict[str, Any] | None = None) -> None:
        """Begin the journal (with the state so far, when continuing a legacy state file)."""
        head = json.dumps({"meta": self.meta}) + "\n"
        atomic_write(self.path, head + (json.dumps({"snapshot": state}) + "\n" if state else ""))
        (self.dir / LEGACY_STATE).unlink(missing_ok=True)

    def append(self, strategy: Strategy, trial: Trial) -> None:
        append_line(self.path, json.dumps({
            "trial": trial.to_dict(), "rng": strategy.rng.bit_generator.state,
            "pending": strategy.inflight + strategy.pending, "extra": strategy._state()}))

    def load(self) -> dict[str, Any] | None:
        """The strategy state to resume from (None: nothing saved yet); refuses a journal of another search."""
        if not self.path.is_file():
            legacy = self.dir / LEGACY_STATE
            if not legacy.is_file():
                return None
            saved = _read_json(legacy)
            self._check_meta(saved.get("meta"), legacy)
            self.start(saved["state"])  # continue it as a journal
            return saved["state"]
        meta, state = _replay(self.path)
        self._check_meta(meta, self.path)
        return state

    def _check_meta(self, meta: Any, where: Path) -> None:
        if meta != self.meta:
            raise CheckpointError(f"{where} was written by a different search ({meta}); resume with the same "
                                  f"settings ({self.meta}) or use a new run directory")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path} ({e}); delete it to start that search again") from None
    if not isinstance(data, dict) or "state" not in data:
        raise CheckpointError(f"cannot read {path} (not a search state); delete it to start that search again")
    return data


def _replay(path: Path) -> tuple[Any, dict[str, Any] | None]:
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    good_end, entries = 0, []
    for i, line in enumerate(lines):
        if not line.strip():
            good_end += len(line) + 1
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            if i >= len(lines) - 2 and not raw.endswith(b"\n"):  # an append a kill cut short: drop it
                os.truncate(path, good_end)
                break
            raise CheckpointError(f"cannot read {path} (line {i + 1} is corrupt); delete it to start that search "
                                  "again") from None
        good_end += len(line) + 1
    if not entries or not isinstance(entries[0], dict) or "meta" not in entries[0]:
        raise CheckpointError(f"cannot read {path} (no header line); delete it to start that search again")
    meta = entries[0]["meta"]
    state: dict[str, Any] | None = None
    try:
        for e in entries[1:]:
            if "snapshot" in e:
                state = dict(e["snapshot"])
                continue
            if state is None:
                state = {"name": meta["strategy"], "seed": meta["seed"], "trials": [], "extra": {}}
            state["trials"].append(e["trial"])
            state.update(rng=e["rng"], pending=e["pending"], extra=e["extra"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"cannot read {path} (an entry lacks {err}); delete it to start that search "
                              "again") from None
    if state is not None:  # every architecture proposed so far: the evaluated ones and those still pending
        state["seen"] = sorted({t["key"] for t in state["trials"]} | set(state["pending"]))
    return meta, state


def read_search_state(run_dir: str | Path) -> dict[str, Any]:
    """`{"meta": ..., "state": ...}` of the search saved in `run_dir` (journal or legacy state file)."""
    d = Path(run_dir)
    if (d / JOURNAL).is_file():
        meta, state = _replay(d / JOURNAL)
        return {"meta": meta, "state": state}
    return _read_json(d / LEGACY_STATE)
