import json
from dataclasses import replace

import pytest
import torch

from slimkit.cli.main import main
from slimkit.distill.tasks import SeedOptions, StoredOptions
from slimkit.errors import ConfigError, UnknownNameError
from slimkit.jobs._common import load_run_model
from slimkit.jobs.distill import DistillJobConfig, StoreLogitsConfig, run, store_logits
from slimkit.jobs.train import TrainJobConfig
from slimkit.jobs.train import run as train
from slimkit.train import TrainConfig, evaluate

DATA = dict(data="digits", limit=200)


def _tc(epochs=1):
    return TrainConfig(epochs=epochs, batch_size=32, lr=0.05, progress=False)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher")
    train(TrainJobConfig(model="convnet_small", out=str(out), train=_tc(2), **DATA))
    return out


def _cfg(tmp_path, teacher_dir, name, **kw):
    base = dict(student="convnet_tiny", teacher="convnet_small", teacher_ckpt=str(teacher_dir), train=_tc(),
                out=str(tmp_path / name), **DATA)
    return DistillJobConfig(**{**base, **kw})


def test_kd_run_folder_is_a_reloadable_student(tmp_path, teacher_dir):
    s = run(_cfg(tmp_path, teacher_dir, "kd", method="kd"))
    assert s["teacher_forward_passes"] == s["epochs"] * 180  # 200 images, 10% held out for validation
    model, spec = load_run_model(tmp_path / "kd")  # a distilled student is a ready `compress --baseline`
    assert spec["model"] == "convnet_tiny"
    from slimkit.data import create_dataset, make_loaders
    splits = create_dataset("digits", None, seed=0, val_fraction=0.1, limit=200, augment=False)
    assert evaluate(model, make_loaders(splits, 64).test)["acc"] == pytest.approx(s["test_acc"])
    assert s["teacher_test_acc"] == json.loads((teacher_dir / "summary.json").read_text())["test_acc"]
    assert json.loads((tmp_path / "kd" / "summary.json").read_text())["method"] == "kd"


def test_stored_from_a_separate_store_equals_the_store_built_in_the_job(tmp_path, teacher_dir):
    inline = run(_cfg(tmp_path, teacher_dir, "inline", method="stored", train=_tc(2)))
    assert inline["teacher_forward_passes"] == 2 * 180  # the teacher ran once per stored augmentation epoch
    info = store_logits(StoreLogitsConfig(teacher="convnet_small", teacher_ckpt=str(teacher_dir), epochs=2,
                                          out=str(tmp_path / "store"), **DATA))
    assert info["images"] == 180 and info["epochs"] == 2
    sep = run(_cfg(tmp_path, teacher_dir, "sep", method="stored", teacher=None, teacher_ckpt=None, train=_tc(2),
                   options=StoredOptions(store=str(tmp_path / "store"))))
    assert sep["teacher_forward_passes"] == 0
    a, _ = load_run_model(tmp_path / "inline")
    b, _ = load_run_model(tmp_path / "sep")
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, msg=k)


def test_seed_reports_a_linear_probe(tmp_path, teacher_dir):
    s = run(_cfg(tmp_path, teacher_dir, "seed", method="seed", options=SeedOptions(queue_size=64)))
    assert "test_acc" not in s and 0.1 < s["probe_acc"] <= 1.0  # ten digit classes: better than chance
    assert (tmp_path / "seed" / "student" / "checkpoint" / "state.json").is_file()
    state = json.loads((tmp_path / "seed" / "student" / "checkpoint" / "state.json").read_text())
    assert state["callbacks"][0]["rows"] == 64  # the queue is in the checkpoint


def test_bad_names_fail_before_training(tmp_path, teacher_dir):
    with pytest.raises(UnknownNameError, match="convnet_tiny"):
        run(_cfg(tmp_path, teacher_dir, "typo", student="convnet_tiyn"))
    with pytest.raises(ConfigError, match="unknown distillation method"):
        run(_cfg(tmp_path, teacher_dir, "m", method="fitnet"))
    assert not (tmp_path / "typo").exists()


def test_teacher_trained_for_other_data_is_refused(tmp_path, teacher_dir):
    import numpy as np
    rng = np.random.default_rng(0)
    npz = tmp_path / "three.npz"
    np.savez(npz, x_train=rng.integers(0, 255, (60, 8, 8), dtype=np.uint8), y_train=rng.integers(0, 3, 60),
             x_test=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8), y_test=rng.integers(0, 3, 20))
    with pytest.raises(ConfigError, match="distil on the teacher's data"):
        run(_cfg(tmp_path, teacher_dir, "other", data=str(npz), limit=None))


def test_cli_distill_and_store_logits(tmp_path, teacher_dir):
    out = tmp_path / "cli"
    args = ["distill", "--student", "convnet_tiny", "--method", "tfkd", "--data", "digits", "--limit", "200",
            "--epochs", "1", "--batch-size", "32", "-T", "10", "--option", "correct_prob=0.8", "--out", str(out)]
    assert main(args) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "tfkd" and s["teacher"] is None and s["options"]["temperature"] == 10.0
    assert s["options"]["correct_prob"] == 0.8
    store = tmp_path / "cli_store"
    assert main(["distill", "store-logits", "--teacher", "convnet_small", "--teacher-ckpt", str(teacher_dir),
                 "--data", "digits", "--limit", "200", "--epochs", "1", "--topk", "3", "--out", str(store)]) == 0
    assert json.loads((store / "summary.json").read_text())["topk"] == 3
    assert main(["distill", "--method", "kd", "--teacher-ckpt", str(tmp_path / "nope"), "--limit", "50",
                 "--out", str(tmp_path / "x")]) == 2


def test_a_short_store_is_replayed_in_turn_for_a_fraction_of_the_teacher_compute(tmp_path, teacher_dir):
    s = run(_cfg(tmp_path, teacher_dir, "cyc", method="stored", store_epochs=1, train=_tc(3)))
    assert s["epochs"] == 3 and s["teacher_forward_passes"] == 180  # 1/3 of live KD's 540
    assert s["options"]["cycle_store"] is True
    from slimkit.distill import LogitStore, StoredKDLoss
    from slimkit.errors import DistillError

    class _Loader:  # what StoredKDLoss reads from the trainer
        def __init__(self, ds):
            self.dataset = ds

    class _Trainer:
        def __init__(self, ds):
            self.train_loader = _Loader(ds)

    class _DS:
        epoch = None

        def set_epoch(self, e):
            self.epoch = e

    store = LogitStore(tmp_path / "cyc" / "logits")
    loss, ds = StoredKDLoss(store, cycle=True), _DS()
    loss.on_epoch_start(_Trainer(ds), 2)
    assert loss.epoch == 0 and ds.epoch == 0  # epoch 2 replays stored epoch 0 and its augmentation
    fresh, ds = StoredKDLoss(store, cycle=True, views="fresh"), _DS()
    fresh.on_epoch_start(_Trainer(ds), 2)
    assert fresh.epoch == 0 and ds.epoch is None  # stored epoch 0's targets, the data's own (new) augmentation
    with pytest.raises(DistillError, match="views"):
        StoredKDLoss(store, views="both")
    strict = StoredKDLoss(store)
    strict.on_epoch_start(_Trainer(_DS()), 2)
    with pytest.raises(DistillError, match="epoch 2 is not in logit store"):
        strict(torch.nn.Identity(), (torch.zeros(1, 10), torch.zeros(1, dtype=torch.long), torch.zeros(1).long()))


def test_a_safetensors_teacher_near_chance_gets_a_warning(tmp_path):
    import io

    from rich.console import Console

    from slimkit.models import create_model
    from slimkit.train import save_weights

    torch.manual_seed(0)
    path = save_weights(create_model("convnet_small", num_classes=10, in_chans=1), tmp_path / "untrained.safetensors")
    buf = io.StringIO()
    s = run(DistillJobConfig(student="convnet_tiny", teacher="convnet_small", teacher_ckpt=str(path), train=_tc(),
                             out=str(tmp_path / "w"), **DATA), console=Console(file=buf, width=200))
    assert s["teacher_test_acc"] < 0.2
    assert "near chance" in buf.getvalue()


def test_a_pruned_teacher_from_compress_is_rebuilt_from_its_record(tmp_path, teacher_dir):
    from slimkit.jobs.compress import FINETUNE, CompressConfig
    from slimkit.jobs.compress import run as compress
    from slimkit.prune import PruneConfig

    c = compress(CompressConfig(baseline=str(teacher_dir), prune=PruneConfig(ratio=0.5),
                                finetune=replace(FINETUNE, epochs=1), batch_size=32, latency_batches=(1,),
                                out=str(tmp_path / "c"), **DATA))
    s = run(_cfg(tmp_path, teacher_dir, "from_pruned", teacher_ckpt=str(tmp_path / "c")))
    assert s["teacher_macs"] == c["pruned"]["macs"] < c["baseline"]["macs"]
    assert s["teacher_test_acc"] == pytest.approx(c["pruned"]["test_acc"])


def test_a_clean_store_is_one_teacher_pass_over_the_unaugmented_images(tmp_path, teacher_dir):
    from slimkit.data import create_dataset
    from slimkit.distill import LogitStore, StoredKDLoss
    from slimkit.errors import DistillError

    s = run(_cfg(tmp_path, teacher_dir, "clean", method="stored", train=_tc(3),
                 options=StoredOptions(store_views="clean")))
    assert s["teacher_forward_passes"] == 180 and s["epochs"] == 3  # one pass, not one per epoch
    store = LogitStore(tmp_path / "clean" / "logits")
    assert store.epochs == 1 and store.manifest["dataset"]["augment"] is False
    teacher, _ = load_run_model(teacher_dir)
    images = create_dataset("digits", None, seed=0, val_fraction=0.1, limit=200, augment=False).train
    x = torch.stack([images[i][0] for i in range(len(images))])
    with torch.no_grad():
        probs = torch.softmax(teacher.eval()(x), dim=1)  # the teacher on the centred images, computed here
    values, classes = store.lookup(0, torch.arange(len(images)))
    k = values.shape[1]
    top = probs.topk(k, dim=1)
    torch.testing.assert_close(values.float(), top.values, atol=2e-3, rtol=1e-2)
    assert (classes[:, 0] == top.indices[:, 0]).float().mean() > 0.99
    store_logits(StoreLogitsConfig(teacher="convnet_small", teacher_ckpt=str(teacher_dir), epochs=1,
                                   out=str(tmp_path / "clean_aug"), **DATA))
    augmented = LogitStore(tmp_path / "clean_aug")  # augmented views must not pass as a clean store

    class _Trainer:
        class train_loader:  # noqa: N801 - what StoredKDLoss reads from the trainer
            dataset = images

    with pytest.raises(DistillError, match="un-augmented"):
        StoredKDLoss(augmented, views="clean").on_train_start(_Trainer())
    StoredKDLoss(augmented, views="fresh").on_train_start(_Trainer())  # same images, new views: accepted
    clean_loss = StoredKDLoss(store, views="clean")  # cycles without being told: every epoch reads the one view
    clean_loss.on_epoch_start(_Trainer(), 7)
    assert clean_loss.epoch == 0
    _Trainer.train_loader.dataset = create_dataset("digits", None, seed=1, val_fraction=0.1, limit=200).train
    with pytest.raises(DistillError, match="differs"):  # different images are refused in every mode
        StoredKDLoss(store, views="clean").on_train_start(_Trainer())


def test_store_logits_cli_writes_a_clean_store(tmp_path, teacher_dir):
    from slimkit.distill import LogitStore

    assert main(["distill", "store-logits", "--teacher", "convnet_small", "--teacher-ckpt", str(teacher_dir),
                 "--data", "digits", "--limit", "200", "--epochs", "1", "--no-augment",
                 "--out", str(tmp_path / "s")]) == 0
    assert LogitStore(tmp_path / "s").manifest["dataset"]["augment"] is False
    assert main(["distill", "--method", "stored", "--store", str(tmp_path / "s"), "--option", "store_views=clean",
                 "--student", "convnet_tiny", "--data", "digits", "--limit", "200", "--epochs", "2", "--batch-size",
                 "32", "--out", str(tmp_path / "d")]) == 0  # a 1-view store trains any number of epochs
    s = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert s["epochs"] == 2 and s["teacher_forward_passes"] == 0 and s["options"]["store_views"] == "clean"


def test_cli_option_of_another_method_is_refused_before_any_work(tmp_path, capsys):
    """--option reaches the chosen method's own options: seed's queue_size given to kd names its owner."""
    out = tmp_path / "wrong"
    assert main(["distill", "--method", "kd", "--option", "queue_size=64", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "queue_size" in err and "seed" in err and not out.exists()
    assert main(["distill", "--method", "none", "-T", "3", "--out", str(out)]) == 2
    assert "temperature" in capsys.readouterr().err and not out.exists()
