import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from slimkit.errors import ConfigError
from slimkit.models import create_model
from slimkit.profile import count_macs, count_params
from slimkit.prune import ChexCallback, ramp
from slimkit.train import Callback, TrainConfig, Trainer


def test_ramp_schedule():
    assert ramp(0, 100, 0.5) == 0.0 and ramp(100, 100, 0.5) == pytest.approx(0.5) and ramp(500, 100, 0.5) == 0.5
    assert ramp(50, 100, 0.5) == pytest.approx(0.5 * (1 - 0.5**3))
    values = [ramp(s, 100, 0.6) for s in range(0, 101, 10)]
    assert values == sorted(values)


def _loader():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 1, 8, 8, generator=g)
    y = (x.mean((1, 2, 3)) > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)


def test_chex_prunes_regrows_and_finalizes_to_the_masked_model():
    torch.manual_seed(0)
    model = create_model("convnet_small", in_chans=1, num_classes=2)
    x = torch.randn(4, 1, 8, 8)
    chex = ChexCallback(model, x, sparsity=0.5, ramp_steps=16, interval=4, regrow=0.5, seed=0)
    Trainer(model, TrainConfig(epochs=3, lr=0.05, progress=False), _loader(), callbacks=[chex]).fit()
    total = sum(g.size for g in chex.groups)
    kept = sum(int(m.sum()) for m in chex.masks.values())
    assert kept == pytest.approx(total * 0.5, abs=3)
    assert [h["sparsity"] for h in chex.history] == sorted(h["sparsity"] for h in chex.history)
    pruned = chex.finalize().eval()
    model.eval()
    torch.testing.assert_close(pruned(x), model(x), atol=1e-5, rtol=1e-5)  # masked training == the cut model
    assert count_params(pruned) < 0.5 * count_params(model)


def test_round_to_keeps_block_multiples_throughout():
    torch.manual_seed(0)
    model = create_model("convnet_small", in_chans=1, num_classes=2)
    sizes = {g.id: g.size for g in ChexCallback(model, torch.randn(1, 1, 8, 8), sparsity=0.5, ramp_steps=8).groups}
    chex = ChexCallback(model, torch.randn(1, 1, 8, 8), sparsity=0.6, ramp_steps=16, interval=4, round_to=4)
    Trainer(model, TrainConfig(epochs=2, lr=0.05, progress=False), _loader(), callbacks=[chex]).fit()
    kept = {gid: int(m.sum()) for gid, m in chex.masks.items()}
    assert any(kept[g] < sizes[g] for g in kept)  # it did prune
    assert all(kept[g] % 4 == 0 for g in kept if sizes[g] >= 4)
    with pytest.raises(ConfigError, match="round_to"):
        ChexCallback(model, torch.randn(1, 1, 8, 8), sparsity=0.5, ramp_steps=8, round_to="fast")


@pytest.mark.parametrize("round_to", [None, 4])
def test_macs_target_is_met_by_the_allocation_itself(round_to):
    torch.manual_seed(0)
    model = create_model("convnet_small", in_chans=1, num_classes=2)
    x = torch.randn(1, 1, 8, 8)
    base = count_macs(model, x)
    sizes = {g.id: g.size for g in ChexCallback(model, x, sparsity=0.5, ramp_steps=8).groups}
    chex = ChexCallback(model, x, macs_target=0.4, ramp_steps=16, interval=4, regrow=0.5, round_to=round_to)
    Trainer(model, TrainConfig(epochs=3, lr=0.05, progress=False), _loader(), callbacks=[chex]).fit()
    fractions = [h["macs_fraction"] for h in chex.history]
    assert fractions[0] == 1.0 and fractions[-1] == pytest.approx(0.4) and fractions == sorted(fractions, reverse=True)
    macs = count_macs(chex.finalize(), x)  # counted on the cut model, independently of the allocation's bisection
    assert 0.3 * base < macs <= 0.4 * base
    if round_to:
        kept = {gid: int(m.sum()) for gid, m in chex.masks.items()}
        assert all(kept[g] % round_to == 0 for g in kept if sizes[g] >= round_to)


def test_chex_takes_exactly_one_budget():
    model = create_model("convnet_tiny", in_chans=1)
    for kw in ({}, {"sparsity": 0.5, "macs_target": 0.5}):
        with pytest.raises(ConfigError, match="exactly one budget"):
            ChexCallback(model, torch.randn(1, 1, 8, 8), ramp_steps=8, **kw)
    with pytest.raises(ConfigError, match=r"budget in \(0, 1\)"):
        ChexCallback(model, torch.randn(1, 1, 8, 8), macs_target=1.5, ramp_steps=8)


def test_regrowth_brings_channels_back():
    torch.manual_seed(0)
    model = create_model("convnet_small", in_chans=1, num_classes=2)
    chex = ChexCallback(model, torch.randn(1, 1, 8, 8), sparsity=0.5, ramp_steps=40, interval=4, regrow=0.6)
    seen_masks = []

    class Spy(Callback):  # records the masks after each CHEX update
        def on_batch_end(self, trainer, step, loss):
            if step % 4 == 0:
                seen_masks.append({k: v.clone() for k, v in chex.masks.items()})

    Trainer(model, TrainConfig(epochs=2, lr=0.05, progress=False), _loader(), callbacks=[chex, Spy()]).fit()
    regrown = sum(int((~a[k] & b[k]).sum()) for a, b in zip(seen_masks, seen_masks[1:], strict=False) for k in a)
    assert regrown > 0


def test_state_round_trip():
    model = create_model("convnet_tiny", in_chans=1)
    a = ChexCallback(model, torch.randn(1, 1, 8, 8), sparsity=0.5, ramp_steps=10)
    a.update(5)
    b = ChexCallback(model, torch.randn(1, 1, 8, 8), sparsity=0.5, ramp_steps=10)
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(a.masks[k], b.masks[k]) for k in a.masks) and b.history == a.history
