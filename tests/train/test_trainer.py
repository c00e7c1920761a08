import json
import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from slimkit.errors import CheckpointError, ConfigError, TrainError
from slimkit.models import load_weights
from slimkit.train import Callback, TrainConfig, Trainer, build_optimizer, cross_entropy_loss, evaluate, lr_at
from slimkit.train.checkpoint import save_weights


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 6, 6, generator=g)
    y = (x.mean(dim=(1, 2, 3)) > 0).long() + 2 * (x[:, 0].mean(dim=(1, 2)) > 0).long()
    return TensorDataset(x, y)


def _model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4))


def _loader(ds, bs=16):
    return DataLoader(ds, batch_size=bs, shuffle=True)


CFG = TrainConfig(epochs=3, lr=0.05, progress=False, warmup_epochs=0.5)


def _weights(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_lr_schedules_match_hand_values():
    cfg = TrainConfig(lr=1.0, warmup_epochs=1, schedule="cosine")
    assert lr_at(0, 100, 10, cfg) == pytest.approx(0.1) and lr_at(9, 100, 10, cfg) == pytest.approx(1.0)
    assert lr_at(10, 100, 10, cfg) == pytest.approx(1.0)
    assert lr_at(55, 100, 10, cfg) == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    step = TrainConfig(lr=1.0, schedule="step", milestones=(0.5, 0.75), gamma=0.1)
    assert [lr_at(s, 100, 10, step) for s in (0, 49, 50, 74, 75)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    assert lr_at(99, 100, 10, TrainConfig(lr=0.3, schedule="constant")) == 0.3


def test_same_seed_same_weights_and_learning_happens():
    a, b = _model(), _model()
    ra = Trainer(a, CFG, _loader(_data()), _loader(_data(40, 1))).fit()
    Trainer(b, CFG, _loader(_data()), _loader(_data(40, 1))).fit()
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert ra.history[-1]["train_loss"] < ra.history[0]["train_loss"]
    assert ra.best_val_acc is not None and len(ra.history) == 3


def test_resume_after_epoch_is_exact(tmp_path):
    straight = _model()
    Trainer(straight, CFG, _loader(_data()), out_dir=tmp_path / "a").fit()
    part = _model()

    class StopAfterEpoch(Callback):
        def on_epoch_end(self, trainer, epoch, metrics):
            if epoch == 0:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(part, CFG, _loader(_data()), callbacks=[StopAfterEpoch()], out_dir=tmp_path / "b").fit()
    resumed = _model(seed=123)  # different init: everything must come from the checkpoint
    r = Trainer(resumed, CFG, _loader(_data()), out_dir=tmp_path / "b").fit(resume=True)
    assert r.epochs_run == 3
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_resuming_a_finished_run_reports_its_training_time(tmp_path):
    first = Trainer(_model(), CFG, _loader(_data()), out_dir=tmp_path).fit()
    again = Trainer(_model(), CFG, _loader(_data()), out_dir=tmp_path).fit(resume=True)
    assert again.epochs_run == 3 and first.wall_time_s > 0
    # the checkpoint holds the time up to the last epoch's end (what fit adds after it is bookkeeping)
    assert 0.5 * first.wall_time_s <= again.wall_time_s <= first.wall_time_s


def test_ctrl_c_mid_epoch_checkpoints_and_resumes_exactly(tmp_path):
    straight = _model()
    Trainer(straight, CFG, _loader(_data()), out_dir=tmp_path / "a").fit()

    class Interrupt(Callback):
        def on_batch_end(self, trainer, step, loss):
            if step == 8:  # inside the second epoch (6 batches per epoch)
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Trainer(_model(), CFG, _loader(_data()), callbacks=[Interrupt()], out_dir=tmp_path / "b").fit()
    state = json.loads((tmp_path / "b" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1 and state["batch_in_epoch"] == 2 and state["global_step"] == 8
    resumed = _model(seed=5)
    Trainer(resumed, CFG, _loader(_data()), out_dir=tmp_path / "b").fit(resume=True)
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_callbacks_order_and_metrics_log(tmp_path):
    calls = []

    class Rec(Callback):
        def on_train_start(self, t):
            calls.append("start")

        def on_epoch_start(self, t, e):
            calls.append(f"e{e}")

        def on_batch_end(self, t, s, loss):
            calls.append("b")

        def on_epoch_end(self, t, e, m):
            calls.append(f"/e{e}")

        def on_train_end(self, t):
            calls.append("end")

    cfg = TrainConfig(epochs=2, progress=False)
    Trainer(_model(), cfg, _loader(_data(32), 16), _loader(_data(16)), callbacks=[Rec()], out_dir=tmp_path).fit()
    assert calls == ["start", "e0", "b", "b", "/e0", "e1", "b", "b", "/e1", "end"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2] and "val_acc" in rows[0]
    assert (tmp_path / "best.safetensors").is_file()


def test_weight_decay_skips_biases_and_norms():
    opt = build_optimizer(list(_model().named_parameters()), TrainConfig(weight_decay=0.1))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and all(p.ndim > 1 for p in decay["params"])
    assert no_decay["weight_decay"] == 0.0 and len(no_decay["params"]) == 4  # conv bias, bn w/b, linear bias


def test_label_smoothing_matches_torch():
    model = _model().eval()
    x, y = _data(8)[:]
    loss, logits = cross_entropy_loss(0.1)(model, (x, y))
    ref = nn.CrossEntropyLoss(label_smoothing=0.1)(model(x), y)
    torch.testing.assert_close(loss, ref)
    m = evaluate(model, [(x, y)])
    assert m["acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean())) and m["n"] == 8


def test_module_loss_parameters_are_trained():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1, 1))

        def forward(self, model, batch):
            logits = model(batch[0]) * self.scale
            return nn.functional.cross_entropy(logits, batch[1]), logits

    loss = Scaled()
    Trainer(_model(), TrainConfig(epochs=1, progress=False), _loader(_data()), loss_fn=loss).fit()
    assert not torch.equal(loss.scale.detach(), torch.ones(1, 1))


def test_divergence_and_bad_config_are_clear():
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)

    def nan_loss(model, batch):
        out = model(batch[0])
        return out.sum() * float("nan"), out

    with pytest.raises(TrainError, match="learning rate"):
        Trainer(_model(), TrainConfig(epochs=1, progress=False), _loader(_data()), loss_fn=nan_loss).fit()


def test_weights_round_trip_and_mismatch(tmp_path):
    m = _model()
    save_weights(m, tmp_path / "w.safetensors")
    other = _model(seed=9)
    assert len(load_weights(other, tmp_path / "w.safetensors", strict=True).loaded) == len(m.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), other.state_dict().values(), strict=True))
    wrong = nn.Sequential(nn.Conv2d(3, 4, 3))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_weights(wrong, tmp_path / "w.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(m, tmp_path / "nope.safetensors")


def test_a_loss_without_class_scores_reports_no_training_accuracy(tmp_path):
    model = torch.nn.Linear(4, 3)
    data = DataLoader(TensorDataset(torch.randn(8, 4), torch.zeros(8, dtype=torch.long)), batch_size=4)
    res = Trainer(model, TrainConfig(epochs=1, progress=False), data,
                  loss_fn=lambda m, b: (m(b[0]).pow(2).mean(), None)).fit()
    assert res.history[0]["train_acc"] is None and res.history[0]["train_loss"] > 0
    res = Trainer(model, TrainConfig(epochs=1, progress=False), data).fit()
    assert 0.0 <= res.history[0]["train_acc"] <= 1.0


def test_cosine_to_lr_min_stepped_per_epoch_matches_hand_values():
    cfg = TrainConfig(lr=1.0, lr_min=0.1, schedule="cosine", lr_per_epoch=True)
    # 4 epochs of 10 steps: the lr is constant within an epoch and follows the cosine over epoch / epochs
    expected = [0.1 + 0.45 * (1 + math.cos(math.pi * e / 4)) for e in range(4)]
    assert [lr_at(s, 40, 10, cfg) for s in (0, 9, 10, 19, 20, 30, 39)] == pytest.approx(
        [expected[0], expected[0], expected[1], expected[1], expected[2], expected[3], expected[3]])
    per_step = TrainConfig(lr=1.0, lr_min=0.1, schedule="cosine")
    assert lr_at(20, 40, 10, per_step) == pytest.approx(0.55) and lr_at(0, 40, 10, per_step) == 1.0
    with pytest.raises(ConfigError, match="lr_min"):
        TrainConfig(lr=0.1, lr_min=0.2)


class _Counter(Callback):
    def __init__(self):
        self.batches = 0

    def on_batch_end(self, trainer, step, loss):
        self.batches += 1

    def state_dict(self):
        return {"batches": self.batches}

    def load_state_dict(self, state):
        self.batches = state["batches"]


class _OtherCounter(_Counter):
    pass


class _Noop(Callback):
    pass


def test_callback_states_are_matched_by_name_and_a_changed_list_is_refused(tmp_path):
    cfg = TrainConfig(epochs=1, progress=False)
    a, b = _Counter(), _OtherCounter()
    Trainer(_model(), cfg, _loader(_data(32)), callbacks=[a, b, _Noop()], out_dir=tmp_path).fit()
    assert a.batches == b.batches == 2
    # another order, a stateless callback gone: each state still reaches the callback of its class
    a2, b2 = _Counter(), _OtherCounter()
    b2.batches = 7  # overwritten from the checkpoint
    Trainer(_model(), cfg, _loader(_data(32)), callbacks=[b2, a2], out_dir=tmp_path).fit(resume=True)
    assert a2.batches == b2.batches == 2
    with pytest.raises(CheckpointError, match="_OtherCounter"):  # its saved state has nowhere to go
        Trainer(_model(), cfg, _loader(_data(32)), callbacks=[_Counter()], out_dir=tmp_path).fit(resume=True)
    with pytest.raises(CheckpointError, match="no saved state for _Counter#1"):  # would start from scratch
        Trainer(_model(), cfg, _loader(_data(32)), callbacks=[_Counter(), _OtherCounter(), _Counter()],
                out_dir=tmp_path).fit(resume=True)


class _Annealed(nn.Module):
    """A user's own layer that trains with a callback (declared once, like DynamicConv2d)."""

    def forward(self, x):
        return x


def test_a_module_declares_the_callback_it_trains_with():
    from slimkit.layers.dynamic import DynamicConv2d
    from slimkit.train.callbacks import DynamicTemperature, callbacks_needed, needed_by

    @needed_by(_Annealed)
    class Anneal(Callback):
        pass

    model = nn.Sequential(nn.Conv2d(3, 4, 3), _Annealed(), DynamicConv2d(4, 4, 3))
    added = callbacks_needed(model, [])
    assert sorted(type(cb).__name__ for cb in added) == ["Anneal", "DynamicTemperature"]
    mine = DynamicTemperature(epochs=3)
    t = Trainer(model, TrainConfig(epochs=1, progress=False), _loader(_data(32)), callbacks=[mine])
    assert [type(cb).__name__ for cb in t.callbacks] == ["DynamicTemperature", "Anneal"] and t.callbacks[0] is mine
    assert callbacks_needed(_model(), []) == []


def test_callback_tensors_survive_json_bit_for_bit():
    from slimkit.train.checkpoint import tensor_from_json, tensor_to_json

    for t in (torch.randn(3, 4, dtype=torch.float64), torch.Generator().manual_seed(3).get_state(),
              torch.tensor([], dtype=torch.int64), torch.arange(6, dtype=torch.int32).reshape(2, 3)):
        back = tensor_from_json(json.loads(json.dumps(tensor_to_json(t))))
        assert back.dtype == t.dtype and torch.equal(back, t)


def test_fit_leaves_the_callers_generators_as_they_were(tmp_path):
    """Training seeds and draws inside the Trainer's own scope: the caller's torch / NumPy / Python streams go on
    as if fit had not run, and fit itself does not depend on them (the same weights after any prior draws)."""
    import random

    import numpy as np

    def draws():
        return torch.rand(3).tolist(), float(np.random.rand()), random.random()

    results = []
    for prior in (1, 2):
        torch.manual_seed(prior), np.random.seed(prior), random.seed(prior)
        expected = draws()
        torch.manual_seed(prior), np.random.seed(prior), random.seed(prior)
        model = _model()
        torch.manual_seed(prior)
        Trainer(model, CFG, _loader(_data())).fit()
        assert draws() == expected
        results.append(_weights(model))
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
