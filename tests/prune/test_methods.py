"""The pruning-method contract, looped over the PRUNERS registry: a method added in one file is tested here."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from slimkit.errors import ConfigError, UnknownNameError
from slimkit.models import create_model
from slimkit.profile import count_macs, count_params
from slimkit.prune import (
    Budget,
    PruneConfig,
    PruneJob,
    PruningMethod,
    create_pruning_method,
    list_pruning_methods,
    load,
    save,
)
from slimkit.prune.budget import BUDGET_KINDS
from slimkit.prune.record import record_of
from slimkit.registry import PRUNERS
from slimkit.train import TrainConfig, Trainer, seeded

METHODS = list_pruning_methods()


def test_the_registry_holds_the_methods_and_names_unknown_ones():
    assert set(METHODS) >= {"oneshot", "iterative", "chex"}
    with pytest.raises(UnknownNameError, match="oneshot"):
        create_pruning_method("magic")


@pytest.mark.parametrize("name", METHODS)
def test_a_method_refuses_the_budgets_it_cannot_meet_before_any_work(name):
    method = create_pruning_method(name)
    assert isinstance(method, PruningMethod) and method.name == name and PRUNERS.get(name) is type(method)
    assert set(method.budgets) <= set(BUDGET_KINDS) and method.rounds >= 1
    for kind in BUDGET_KINDS:
        value = 0.3 if kind == "ratio" else (2.0 if kind == "latency_target" else 0.5)
        if kind in method.budgets:
            method.check(Budget(kind, value))
        else:
            with pytest.raises(ConfigError, match=f"method '{name}' takes"):
                method.check(Budget(kind, value))
    if method.fractions_only and "macs_target" in method.budgets:
        with pytest.raises(ConfigError, match="a fraction"):
            method.check(Budget("macs_target", 2.5e6))  # an absolute count


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g)
    return TensorDataset(x, (x.mean((1, 2, 3)) > 0).long())


@pytest.mark.parametrize("name", METHODS)
def test_a_method_meets_a_macs_fraction_and_its_record_replays(name, tmp_path):
    """Every method, on a tiny model with the job's hooks: fewer MACs than asked, and save/load gives the same
    model (the record each method writes replays)."""
    method = create_pruning_method(name)
    kind = "macs_target" if "macs_target" in method.budgets else method.budgets[0]
    loader = DataLoader(_data(), batch_size=16, shuffle=True)
    cfg = TrainConfig(epochs=1, lr=0.05, progress=False)

    def fresh():
        with seeded(0):
            return create_model("convnet_small", in_chans=1, num_classes=2)

    def train(model, callbacks):
        Trainer(model, cfg, loader, callbacks=list(callbacks)).fit()

    def finetune(model, step):
        Trainer(model, cfg, loader).fit()

    base = fresh()
    x = torch.randn(2, 1, 8, 8)
    config = PruneConfig(importance="l2", allocation="uniform", **Budget(kind, 0.5).kwargs())
    job = PruneJob(base, (x,), config, data=[next(iter(loader))],
                   finetune=finetune, train=train, fresh_model=fresh, train_steps=len(loader),
                   steps_per_epoch=len(loader))
    before = {k: v.clone() for k, v in base.state_dict().items()}
    pruned = method.run(job)
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())  # the job's model is not changed
    if kind == "macs_target":
        assert count_macs(pruned, x) <= 0.5 * count_macs(base, x)
    assert count_params(pruned) < count_params(base)
    assert record_of(pruned) is not None
    save(pruned, tmp_path / "p.safetensors", model_name="convnet_small", model_kwargs={"in_chans": 1,
                                                                                        "num_classes": 2})
    back = load(tmp_path / "p.safetensors")
    pruned.eval(), back.eval()
    torch.testing.assert_close(back(x), pruned(x))


def test_a_method_gets_the_whole_prune_config():
    """The job hands a method the one PruneConfig: an option the job never names (max_group_ratio) reaches the
    pruner (uniform ratio 0.8 keeps 20% of each group; capped at 0.5 it keeps half), against a hand count."""
    model = create_model("convnet_small", num_classes=2, in_chans=1)
    x = torch.randn(1, 1, 8, 8)
    widths = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)}
    for cap, keep in ((0.9, 0.2), (0.5, 0.5)):
        config = PruneConfig(ratio=0.8, allocation="uniform", max_group_ratio=cap)
        pruned = create_pruning_method("oneshot").run(PruneJob(model, (x,), config))
        kept = {n: m.out_channels for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d)}
        assert all(abs(kept[n] - keep * widths[n]) <= 1 for n in widths), (cap, kept, widths)  # (rounding carried)
