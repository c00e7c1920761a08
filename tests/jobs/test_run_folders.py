"""A run folder belongs to one run: inputs are validated before anything is written, a new run refuses an occupied
folder, and --resume refuses options that differ from the run's own (naming them) and leaves the folder as it was."""

import json

import pytest

from slimkit.errors import CheckpointError, ConfigError, SlimkitError
from slimkit.jobs import compress, train
from slimkit.train import TrainConfig, Trainer

TC = dict(epochs=1, batch_size=32, lr=0.05, progress=False)


def _train_cfg(out, **kw):
    train_kw = {**TC, **kw.pop("train", {})}
    return train.TrainJobConfig(**{"model": "convnet_tiny", "data": "digits", "limit": 150, "out": str(out), **kw},
                                train=TrainConfig(**train_kw))


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def train_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    summary = train.run(_train_cfg(out))
    return out, summary


@pytest.mark.parametrize("change, named", [
    (dict(train=dict(optimizer="adamw")), "train.optimizer: 'sgd' -> 'adamw'"),
    (dict(train=dict(lr=0.2)), "train.lr: 0.05 -> 0.2"),
    (dict(train=dict(batch_size=64)), "train.batch_size"),
    (dict(model="convnet_small"), "model: 'convnet_tiny' -> 'convnet_small'"),
    (dict(limit=100), "limit"),
])
def test_resume_with_other_options_is_refused_and_changes_nothing(train_run, change, named):
    out, _ = train_run
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match="--resume continues the run") as e:
        train.run(_train_cfg(out, **change), resume=True)
    assert named in str(e.value) and "another --out" in str(e.value)
    assert _snapshot(out) == before  # model.json, config.yaml, weights: untouched


def test_resume_may_extend_training(tmp_path):
    out = tmp_path / "run"
    train.run(_train_cfg(out))
    s = train.run(_train_cfg(out, train=dict(epochs=2)), resume=True)
    assert s["epochs"] == 2
    assert [json.loads(r)["epoch"] for r in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_new_run_refuses_an_occupied_folder(train_run):
    out, _ = train_run
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match="already holds a run.*--resume"):
        train.run(_train_cfg(out))
    assert _snapshot(out) == before


@pytest.mark.parametrize("kw, error", [
    (dict(model="resnet_nope"), SlimkitError),
    (dict(model="convnet_tiny", model_kwargs={"no_such_arg": 1}), SlimkitError),
    (dict(data="no-such-data"), SlimkitError),
])
def test_bad_inputs_fail_before_the_run_folder_is_written(tmp_path, kw, error):
    with pytest.raises(error):
        train.run(_train_cfg(tmp_path / "run", **kw))
    assert not (tmp_path / "run").exists()


def test_trainer_refuses_a_checkpoint_of_other_options(tmp_path):
    """The library's Trainer checks too: an optimizer change used to be a raw KeyError."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    data = DataLoader(TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,))), batch_size=8)
    Trainer(torch.nn.Linear(4, 2), TrainConfig(**TC), data, out_dir=tmp_path).fit()
    with pytest.raises(CheckpointError, match="optimizer: 'sgd' -> 'adamw'"):
        Trainer(torch.nn.Linear(4, 2), TrainConfig(**{**TC, "optimizer": "adamw"}), data,
                out_dir=tmp_path).fit(resume=True)


# ----------------------------------------------------------------------------------------------------- compress
def _compress_cfg(out, **kw):
    base = dict(model="convnet_tiny", data="digits", limit=150, baseline_epochs=1, finetune_epochs=0, batch_size=32,
                latency_batches=(1,), out=str(out))
    return compress.CompressConfig(**{**base, **kw})


@pytest.mark.parametrize("kw, option", [
    (dict(macs=0.0), "macs"), (dict(macs=-1.0), "macs"), (dict(macs=float("nan")), "macs"),
    (dict(params=float("inf")), "params"), (dict(ratio=1.5), "ratio"), (dict(baseline_epochs=0), "baseline_epochs"),
    (dict(finetune_epochs=-1), "finetune_epochs"), (dict(method="magic"), "method"),
])
def test_compress_budgets_are_validated_before_any_work(tmp_path, kw, option):
    with pytest.raises(ConfigError) as e:
        compress.run(_compress_cfg(tmp_path / "run", **kw))
    assert e.value.option == option
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kw", [dict(model="resnet_nope"), dict(importance="nope"), dict(data="no-such-data"),
                                dict(baseline="/no/such/run")])
def test_compress_names_are_validated_before_the_baseline_trains(tmp_path, kw):
    with pytest.raises(SlimkitError):
        compress.run(_compress_cfg(tmp_path / "run", **kw))
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def compress_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "run"
    return out, compress.run(_compress_cfg(out, macs=0.5))


def test_compress_without_finetuning(compress_run):
    _, s = compress_run  # --finetune-epochs 0: prune, export and measure, no training after pruning
    assert s["pruned"]["test_acc"] == s["acc_after_prune_before_finetune"]
    assert s["pruned"]["macs"] <= 0.5 * s["baseline"]["macs"]


@pytest.mark.parametrize("change, named", [(dict(macs=0.3), "macs: 0.5 -> 0.3"),
                                           (dict(model="convnet_small"), "model: 'convnet_tiny' -> 'convnet_small'"),
                                           (dict(importance="l2"), "importance")])
def test_compress_resume_with_another_budget_or_model_is_refused(compress_run, change, named):
    out, _ = compress_run
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match="--resume continues the run") as e:
        compress.run(_compress_cfg(out, **{"macs": 0.5, **change}), resume=True)
    assert named in str(e.value)
    assert _snapshot(out) == before


def test_a_compress_run_folder_exports_and_profiles_like_a_train_run(compress_run, tmp_path, capsys):
    from slimkit.cli.main import main
    from slimkit.jobs._common import load_run_model
    from slimkit.profile import count_macs

    out, s = compress_run
    model, spec = load_run_model(out)
    assert count_macs(model, (1, *spec["input_size"])) == s["pruned"]["macs"]
    assert main(["export", str(out), "--out", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").is_file()
    assert main(["profile", str(out), "--json", str(tmp_path / "p.json")]) == 0
    assert json.loads((tmp_path / "p.json").read_text())["macs"] == s["pruned"]["macs"]
