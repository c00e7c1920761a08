"""A run folder belongs to one run: inputs are validated before anything is written, a new run refuses an occupied
folder, and --resume refuses options that differ from the run's own (naming them) and leaves the folder as it was."""

import json

import pytest

from slimkit.config import from_dict
from slimkit.errors import CheckpointError, ConfigError, SlimkitError
from slimkit.jobs import compress, train
from slimkit.prune import PruneConfig
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
    base = dict(model="convnet_tiny", data="digits", limit=150, baseline_epochs=1, finetune=None, batch_size=32,
                latency_batches=(1,), out=str(out))
    return compress.CompressConfig(**{**base, **kw})


@pytest.mark.parametrize("options, option", [
    ({"macs_target": 0.0}, "prune.macs_target"), ({"macs_target": -1.0}, "prune.macs_target"),
    ({"macs_target": float("nan")}, "prune.macs_target"), ({"params_target": float("inf")}, "prune.params_target"),
    ({"ratio": 1.5}, "prune.ratio"), ({"ratio": 0}, "prune.ratio"), (dict(baseline_epochs=0), "baseline_epochs"),
    (dict(finetune={"epochs": -1}), "finetune.epochs"), (dict(method="magic"), "method"),
])
def test_compress_budgets_are_validated_before_any_work(tmp_path, options, option):
    layout = {"prune": options} if option.startswith("prune.") else options  # a config file's, as in a run folder
    with pytest.raises(ConfigError) as e:
        compress.run(from_dict(compress.CompressConfig, {"out": str(tmp_path / "run"), **layout}))
    assert e.value.option == option
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kw", [dict(model="resnet_nope"), dict(prune=PruneConfig(importance="nope", macs_target=0.5)),
                                dict(data="no-such-data"),
                                dict(baseline="/no/such/run")])
def test_compress_names_are_validated_before_the_baseline_trains(tmp_path, kw):
    with pytest.raises(SlimkitError):
        compress.run(_compress_cfg(tmp_path / "run", **kw))
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def compress_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compress") / "run"
    return out, compress.run(_compress_cfg(out, prune=PruneConfig(macs_target=0.5)))


def test_compress_without_finetuning(compress_run):
    _, s = compress_run  # --finetune-epochs 0: prune, export and measure, no training after pruning
    assert s["pruned"]["test_acc"] == s["acc_after_prune_before_finetune"]
    assert s["pruned"]["macs"] <= 0.5 * s["baseline"]["macs"]


@pytest.mark.parametrize("change, named", [
    (dict(prune=PruneConfig(macs_target=0.3)), "prune.macs_target: 0.5 -> 0.3"),
    (dict(model="convnet_small"), "model: 'convnet_tiny' -> 'convnet_small'"),
    (dict(prune=PruneConfig(macs_target=0.5, importance="l2")), "prune.importance")])
def test_compress_resume_with_another_budget_or_model_is_refused(compress_run, change, named):
    out, _ = compress_run
    before = _snapshot(out)
    with pytest.raises(CheckpointError, match="--resume continues the run") as e:
        compress.run(_compress_cfg(out, **{"prune": PruneConfig(macs_target=0.5), **change}), resume=True)
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


# config.yaml as slimkit compress wrote it before the budget and fine-tuning moved into the prune / finetune sections
OLD_LAYOUT = """\
model: convnet_tiny
weights: null
data: digits
data_root: null
model_kwargs: {}
baseline: null
baseline_epochs: 1
method: oneshot
importance: l1
macs: 0.5
params: null
latency_ms: null
ratio: null
allocation: latency
round_to: null
ignored_layers: []
dims: null
dim_ratios: {}
ratio_search: false
search_queries: 24
token_method: select
calib_batches: 4
distill: false
kd_temperature: 4.0
kd_alpha: 0.9
finetune_epochs: 0
finetune_lr: 0.01
batch_size: 32
limit: 150
val_fraction: 0.1
input_size: null
norm: auto
workers: null
seed: 0
latency_batches:
- 1
quantize: null
out: OUT
"""


def test_a_run_folder_of_the_old_flat_layout_resumes(compress_run, tmp_path, capsys):
    """A run folder written before CompressConfig had its prune / finetune sections resumes from the command line
    (its options read in today's layout: nothing is redone) and still refuses a changed budget, by its new name."""
    import shutil

    from slimkit.cli.main import main

    src, s = compress_run
    out = tmp_path / "old"
    shutil.copytree(src, out)
    (out / "config.yaml").write_text(OLD_LAYOUT.replace("OUT", str(out)))
    pruned = (out / "pruned.safetensors").read_bytes()
    with pytest.warns(DeprecationWarning, match="macs is now called prune.macs_target"):
        assert main(["compress", "--resume", "--out", str(out)]) == 0
    assert (out / "pruned.safetensors").read_bytes() == pruned  # the prune stage was not redone
    assert json.loads((out / "report.json").read_text())["pruned"]["macs"] == s["pruned"]["macs"]
    (out / "config.yaml").write_text(OLD_LAYOUT.replace("OUT", str(out)))
    before = _snapshot(out)
    with pytest.warns(DeprecationWarning):
        assert main(["compress", "--resume", "--out", str(out), "--macs", "0.3"]) == 2
    assert "prune.macs_target: 0.5 -> 0.3" in capsys.readouterr().err.replace("\n", "")
    assert _snapshot(out) == before
