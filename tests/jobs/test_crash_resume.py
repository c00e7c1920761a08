"""Fault injection: a command stopped at any write (just before a file is committed, or just after) and then
resumed ends exactly as an uninterrupted run: same weights, same metrics rows (none duplicated), no stray files.

A kill is simulated by raising a BaseException from `slimkit.fileio.fault_hook` at the n-th write event of the run,
so every file a command writes is hit before and after its write.
"""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from slimkit import fileio
from slimkit.jobs import compress, distill, oneshot, train
from slimkit.nas.oneshot import OneShotConfig
from slimkit.prune import PruneConfig
from slimkit.train import TrainConfig


class Killed(BaseException):
    pass


def _record_events(job):
    events = []
    fileio.fault_hook = lambda path, when: events.append(f"{path.parent.name}/{path.name}:{when}")
    try:
        result = job(False)
    finally:
        fileio.fault_hook = None
    return result, events


def _kill_then_resume(job, n):
    count = {"i": 0}

    def hook(path, when):
        count["i"] += 1
        if count["i"] - 1 == n:
            raise Killed(f"{path}:{when}")
    fileio.fault_hook = hook
    try:
        with pytest.raises(Killed):
            job(False)
    finally:
        fileio.fault_hook = None
    return job(True)


def _weights(path):
    return load_file(str(path))


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), (a, k)


def _rows(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "time_s"}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _no_temporaries(run_dir):
    hidden = [str(p) for p in run_dir.rglob(".*")]
    assert not hidden, hidden


def _train_job(out):
    cfg = train.TrainJobConfig(model="convnet_small", data="digits", limit=200, out=str(out),
                               train=TrainConfig(epochs=2, batch_size=32, lr=0.05, progress=False))
    return lambda resume: train.run(cfg, resume=resume)


def _check_train(ref_dir, ref, run_dir, got):
    for f in ("model.safetensors", "best.safetensors"):
        _assert_same_weights(ref_dir / f, run_dir / f)
    assert _rows(run_dir) == _rows(ref_dir)  # one row per epoch: none lost, none duplicated
    drop = ("train_time_s", "out")
    assert {k: v for k, v in got.items() if k not in drop} == {k: v for k, v in ref.items() if k not in drop}
    _no_temporaries(run_dir)


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory):
    ref_dir = tmp_path_factory.mktemp("ref")
    ref, events = _record_events(_train_job(ref_dir))
    return ref_dir, ref, events


def test_the_train_job_writes_through_the_shared_writer(train_reference):
    _, _, events = train_reference
    names = {e.split(":")[0].split("/")[-1].split("-")[0] for e in events}
    for f in ("config.yaml", "model.json", "metrics.jsonl", "state.json", "model", "optimizer", "best",
              "best.safetensors", "model.safetensors", "summary.json"):
        assert f in names, (f, sorted(names))


@pytest.mark.parametrize("target", ["checkpoint/state.json:before", "metrics.jsonl:after", "best.safetensors:before"])
def test_train_killed_inside_a_checkpoint_resumes_exactly(tmp_path, train_reference, target):
    """The issue's case: weights of epoch 2 written, state of epoch 1 still in force (and neighbours)."""
    ref_dir, ref, events = train_reference
    n = max(i for i, e in enumerate(events) if e.endswith(target))  # in the last epoch: an earlier one committed
    got = _kill_then_resume(_train_job(tmp_path / "run"), n)
    _check_train(ref_dir, ref, tmp_path / "run", got)


@pytest.mark.slow
def test_train_killed_at_every_write_resumes_exactly(tmp_path, train_reference):
    ref_dir, ref, events = train_reference
    for n, event in enumerate(events):
        run_dir = tmp_path / f"kill{n}"
        got = _kill_then_resume(_train_job(run_dir), n)
        try:
            _check_train(ref_dir, ref, run_dir, got)
        except AssertionError as e:
            raise AssertionError(f"killed at {event}: {e}") from None


# ----------------------------------------------------------------------------------------------------- compress
def _compress_job(out):
    cfg = compress.CompressConfig(model="convnet_small", data="digits", limit=200, baseline_epochs=1,
                                  finetune=replace(compress.FINETUNE, epochs=1), batch_size=32, latency_batches=(1,),
                                  prune=PruneConfig(macs_target=0.5), out=str(out))
    return lambda resume: compress.run(cfg, resume=resume)


@pytest.fixture(scope="module")
def compress_reference(tmp_path_factory):
    ref_dir = tmp_path_factory.mktemp("cref")
    ref, events = _record_events(_compress_job(ref_dir))
    return ref_dir, ref, events


def _check_compress(ref_dir, ref, run_dir, got):
    for f in ("model.safetensors", "pruned.safetensors", "baseline/model.safetensors"):
        _assert_same_weights(ref_dir / f, run_dir / f)
    for k in ("test_acc", "macs", "params"):
        assert got["pruned"][k] == ref["pruned"][k] and got["baseline"][k] == ref["baseline"][k], k
    assert got["acc_after_prune_before_finetune"] == ref["acc_after_prune_before_finetune"]
    assert _rows(run_dir / "finetune") == _rows(ref_dir / "finetune")
    for f in ("report.json", "report.html", "model.onnx", "model.json", "kept_channels.png"):
        assert (run_dir / f).is_file(), f
    _no_temporaries(run_dir)


@pytest.mark.slow
def test_compress_killed_between_the_pruned_weights_and_their_record_resumes(tmp_path, compress_reference):
    """The issue's case: weights and pruning record are one unit, so the kill cannot block --resume."""
    ref_dir, ref, events = compress_reference
    for target in ("/pruned.prune.json:after", "/pruned.safetensors:before", "/pruned.safetensors:after"):
        n = events.index(next(e for e in events if e.endswith(target)))
        run_dir = tmp_path / target.strip("/").replace(":", "_")
        _check_compress(ref_dir, ref, run_dir, _kill_then_resume(_compress_job(run_dir), n))


@pytest.mark.slow
def test_compress_killed_at_each_of_its_own_files_resumes_exactly(tmp_path, compress_reference):
    """Every file compress writes itself (the baseline and fine-tune folders are the train test's), hit just before
    its commit; the last write of the run also just after."""
    ref_dir, ref, events = compress_reference
    own = [i for i, e in enumerate(events) if e.startswith(ref_dir.name + "/") and e.endswith(":before")]
    for n in own + [len(events) - 1]:
        run_dir = tmp_path / f"kill{n}"
        try:
            _check_compress(ref_dir, ref, run_dir, _kill_then_resume(_compress_job(run_dir), n))
        except AssertionError as e:
            raise AssertionError(f"killed at {events[n]}: {e}") from None


# ------------------------------------------------------------------------------------------------ distill, oneshot
@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    _train_job(out)(False)
    return out


def _distill_job(out, teacher):
    cfg = distill.DistillJobConfig(student="convnet_tiny", teacher="convnet_small", teacher_ckpt=str(teacher),
                                   method="kd", data="digits", limit=200, out=str(out),
                                   train=TrainConfig(epochs=2, batch_size=32, lr=0.05, progress=False))
    return lambda resume: distill.run(cfg, resume=resume)


@pytest.mark.slow
def test_distill_killed_at_each_of_its_files_resumes_exactly(tmp_path, teacher_dir):
    ref_dir = tmp_path / "ref"
    ref, events = _record_events(_distill_job(ref_dir, teacher_dir))
    picks = [i for i, e in enumerate(events) if e.startswith("ref/") or e.startswith("checkpoint/state.json")]
    for n in picks:
        run_dir = tmp_path / f"kill{n}"
        got = _kill_then_resume(_distill_job(run_dir, teacher_dir), n)
        try:
            _assert_same_weights(ref_dir / "model.safetensors", run_dir / "model.safetensors")
            assert got["test_acc"] == ref["test_acc"] and _rows(run_dir / "student") == _rows(ref_dir / "student")
            _no_temporaries(run_dir)
        except AssertionError as e:
            raise AssertionError(f"killed at {events[n]}: {e}") from None


@pytest.mark.slow
def test_oneshot_killed_inside_a_checkpoint_resumes_exactly(tmp_path):
    def job(out):
        cfg = oneshot.OneShotJobConfig(out=str(out), progress=False, search=OneShotConfig(
            method="darts", data="digits", limit=200, epochs=2, channels=4, cells_per_stage=1, batch_size=32))
        return lambda resume: oneshot.run(cfg, resume=resume)
    ref, events = _record_events(job(tmp_path / "ref"))
    for target in ("checkpoint/state.json:before", "checkpoint/state.json:after", "ref/summary.json:before"):
        n = max(i for i, e in enumerate(events) if e == target)  # the last: an earlier checkpoint is in force
        got = _kill_then_resume(job(tmp_path / f"k{n}"), n)
        assert got["alphas"] == ref["alphas"] and got["cell"] == ref["cell"], target
        _no_temporaries(tmp_path / f"k{n}")
