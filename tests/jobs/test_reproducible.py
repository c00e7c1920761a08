"""Same seed, same command, same result: two runs of each job with one seed are bit-identical (weights and
metrics), whatever the process ran before them."""

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from slimkit.jobs import compress, distill, oneshot, search, train
from slimkit.nas.oneshot import OneShotConfig
from slimkit.prune import PruneConfig
from slimkit.train import TrainConfig

TC = dict(epochs=1, batch_size=32, lr=0.05, progress=False)


def _same_weights(a, b):
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _twice(tmp_path, job, make_cfg):
    """Run `job` twice with one seed, drawing random numbers in between (a stale global RNG must not matter)."""
    out = []
    for name in ("a", "b"):
        torch.rand(17)  # a different global generator state before each run
        out.append(job(make_cfg(str(tmp_path / name))))
    return out


def test_train_twice_with_one_seed_is_bit_identical(tmp_path):
    a, b = _twice(tmp_path, train.run, lambda out: train.TrainJobConfig(
        model="convnet_small", data="digits", limit=200, out=out, train=TrainConfig(seed=3, **TC)))
    _same_weights(tmp_path / "a/model.safetensors", tmp_path / "b/model.safetensors")
    assert {k: v for k, v in a.items() if k not in ("out", "train_time_s")} == \
        {k: v for k, v in b.items() if k not in ("out", "train_time_s")}
    rows = [[{k: v for k, v in json.loads(line).items() if k != "time_s"}
             for line in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in "ab"]
    assert rows[0] == rows[1]


def test_another_seed_gives_another_model(tmp_path):
    for seed, name in ((0, "a"), (1, "b")):
        train.run(train.TrainJobConfig(model="convnet_small", data="digits", limit=200, out=str(tmp_path / name),
                                       train=TrainConfig(seed=seed, **TC)))
    wa, wb = (load_file(str(tmp_path / n / "model.safetensors")) for n in "ab")
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.slow
def test_distill_twice_with_one_seed_is_bit_identical(tmp_path):
    a, b = _twice(tmp_path, distill.run, lambda out: distill.DistillJobConfig(
        student="convnet_tiny", teacher="convnet_small", teacher_epochs=1, method="feature", data="digits",
        limit=200, out=out, train=TrainConfig(seed=2, **TC)))
    _same_weights(tmp_path / "a/model.safetensors", tmp_path / "b/model.safetensors")
    _same_weights(tmp_path / "a/teacher/model.safetensors", tmp_path / "b/teacher/model.safetensors")
    assert a["test_acc"] == b["test_acc"] and a["teacher_test_acc"] == b["teacher_test_acc"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["oneshot", "chex"])
def test_compress_twice_with_one_seed_is_bit_identical(tmp_path, method):
    a, b = _twice(tmp_path, compress.run, lambda out: compress.CompressConfig(
        model="convnet_small", data="digits", limit=200, baseline_epochs=1,
        finetune=replace(compress.FINETUNE, epochs=1), method=method, batch_size=32, latency_batches=(1,), seed=4,
        prune=PruneConfig(macs_target=0.5, importance="taylor"), out=out))
    _same_weights(tmp_path / "a/model.safetensors", tmp_path / "b/model.safetensors")
    for k in ("test_acc", "macs", "params"):
        assert a["pruned"][k] == b["pruned"][k] and a["baseline"][k] == b["baseline"][k]
    assert a["acc_after_prune_before_finetune"] == b["acc_after_prune_before_finetune"]


@pytest.mark.slow
def test_training_search_twice_with_one_seed_gives_the_same_trials(tmp_path):
    def cfg(out):
        return search.SearchJobConfig(benchmark="none", data="digits", limit=200, epochs=1, queries=3, seed=5,
                                      strategies=("random",), space_kwargs={"channels": 4, "cells_per_stage": 1},
                                      out=out)
    _twice(tmp_path, search.run, cfg)
    hist = [json.loads((tmp_path / n / "history.json").read_text()) for n in "ab"]
    trials = [[(t["key"], t["metrics"]["val_acc"], t["metrics"]["test_acc"]) for t in h["random"][0]["history"]]
              for h in hist]
    assert trials[0] == trials[1] and len(trials[0]) == 3


@pytest.mark.slow
def test_oneshot_twice_with_one_seed_is_bit_identical(tmp_path):
    a, b = _twice(tmp_path, oneshot.run, lambda out: oneshot.OneShotJobConfig(out=out, progress=False, search=(
        OneShotConfig(method="eoinas", data="digits", limit=200, epochs=1, channels=4, cells_per_stage=1,
                      batch_size=32, seed=6))))
    untimed = [[{k: v for k, v in row.items() if k != "time_s"} for row in r["history"]] for r in (a, b)]
    assert a["alphas"] == b["alphas"] and untimed[0] == untimed[1] and a["cell"] == b["cell"]
