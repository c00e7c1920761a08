import math

import pytest
import torch

from slimkit.errors import ConfigError
from slimkit.models import create_model
from slimkit.profile import count_macs
from slimkit.prune import iterative_prune, keep_schedule, load, prune, save


def test_schedules_hand_values():
    assert [keep_schedule(s, 4, 0.5, "linear") for s in (1, 2, 3, 4)] == pytest.approx([0.875, 0.75, 0.625, 0.5])
    geo = [keep_schedule(s, 2, 0.25, "geometric") for s in (1, 2)]
    assert geo == pytest.approx([0.5, 0.25])
    assert keep_schedule(3, 3, 0.3) == pytest.approx(0.3) and math.isclose(keep_schedule(1, 1, 1.0), 1.0)
    with pytest.raises(ConfigError):
        keep_schedule(0, 3, 0.5)


def test_iterative_prune_meets_each_step_and_reloads(tmp_path):
    model = create_model("resnet20", in_chans=1)
    x = torch.randn(1, 1, 16, 16)
    base = count_macs(model, x)
    seen = []

    def finetune(m, step):
        seen.append((step, count_macs(m, x)))

    pruned = iterative_prune(model, x, steps=3, macs_target=0.4, finetune=finetune, schedule="linear")
    assert [s for s, _ in seen] == [1, 2, 3]
    for step, macs in seen:
        assert macs <= keep_schedule(step, 3, 0.4, "linear") * base
    assert seen[0][1] > seen[1][1] > seen[2][1]
    assert len(pruned.slimkit_pruning["steps"]) == 3
    save(pruned, tmp_path / "it.safetensors", model_name="resnet20", model_kwargs={"in_chans": 1})
    back = load(tmp_path / "it.safetensors").eval()
    torch.testing.assert_close(back(x), pruned.eval()(x))


@pytest.mark.parametrize("block", [8, 16])
def test_iterative_prune_falls_back_to_unrounded_like_prune(monkeypatch, block):
    """On a CPU with 16-channel blocks (AVX-512) ResNet-20's 16-channel groups cannot shrink in whole blocks; each
    step then prunes unrounded, as prune() does, instead of raising a BudgetError at the second step."""
    import slimkit.prune.allocation as allocation_mod

    monkeypatch.setattr(allocation_mod, "channel_multiple", lambda b=block: b)
    model = create_model("resnet20", in_chans=1)
    x = torch.randn(1, 1, 16, 16)
    base = count_macs(model, x)
    seen = []
    pruned = iterative_prune(model, x, steps=3, macs_target=0.4, schedule="linear",
                             finetune=lambda m, step: seen.append(count_macs(m, x)))
    assert all(macs <= keep_schedule(s, 3, 0.4, "linear") * base for s, macs in enumerate(seen, 1))
    one_shot = prune(model, x, macs_target=0.4)  # prune() on the same machine meets the same final budget
    assert count_macs(pruned, x) <= 0.4 * base and count_macs(one_shot, x) <= 0.4 * base
