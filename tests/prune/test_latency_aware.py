import pytest
import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.prune import PruneConfig, Pruner
from slimkit.prune.latency import group_latency_costs, latency_weighted_scores
from slimkit.prune.pruner import module_plan


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 16, 3, padding=1)
        self.c = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.c(torch.relu(self.b(torch.relu(self.a(x)))))
        return self.fc(x.mean((2, 3)))


def _fake_ms(m: nn.Module) -> float:
    """A stand-in 'latency': 0.1 ms per output channel of b (only b's group costs time)."""
    return 0.1 * m.b.out_channels


def test_costs_are_time_saved_per_removed_channel():
    torch.manual_seed(0)
    model = _Net()
    graph_groups = Pruner(model, (torch.randn(1, 3, 8, 8),), PruneConfig(ratio=0.1)).groups
    costs = group_latency_costs(model, graph_groups, _fake_ms, share=0.5, plan_fn=module_plan)
    by_producer = {g.producers[0].module: costs[g.id] for g in graph_groups}
    assert by_producer["b"] == pytest.approx(0.1)  # 8 of 16 channels removed save 0.8 ms
    assert by_producer["a"] == pytest.approx(0.0) and by_producer["c"] == pytest.approx(0.0)
    assert model.b.out_channels == 16  # measured on copies


def test_costs_follow_round_to():
    torch.manual_seed(0)
    model = _Net()
    groups = Pruner(model, (torch.randn(1, 3, 8, 8),), PruneConfig(ratio=0.1)).groups
    by_producer = {g.producers[0].module: g for g in groups}

    def step_ms(m: nn.Module) -> float:  # time steps at multiples of 8 channels, as a blocked kernel's does
        return 0.4 * -(-m.b.out_channels // 8)

    share = 0.3  # 4 of 16 channels: no block boundary crossed, so nothing measured as saved
    plain = group_latency_costs(model, groups, step_ms, share=share, plan_fn=module_plan)
    rounded = group_latency_costs(model, groups, step_ms, share=share, plan_fn=module_plan, round_to=8)
    b, c = by_producer["b"].id, by_producer["c"].id
    assert plain[b] == pytest.approx(0.0)
    assert rounded[b] == pytest.approx(0.4 / 8)  # cut to 8 kept: one block (0.4 ms) saved by 8 channels
    assert rounded[c] == 0.0  # a group of exactly one block cannot shrink
    odd = group_latency_costs(model, groups, lambda m: 0.4 * -(-m.b.out_channels // 12), share=0.5,
                              plan_fn=module_plan, round_to=12)  # 16 channels: the only smaller count kept is 12
    assert odd[b] == pytest.approx(0.4 / 4)


def test_weighted_scores_by_hand():
    scores = {0: torch.tensor([1.0, 3.0]), 1: torch.tensor([10.0, 30.0])}
    out = latency_weighted_scores(scores, {0: 2.0, 1: 0.0}, floor=0.1)
    # group means 2 and 20 -> both become [0.5, 1.5]; relative costs 2/2 = 1 and max(0, 0.1) = 0.1
    torch.testing.assert_close(out[0], torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(out[1], torch.tensor([5.0, 15.0]))


def test_latency_aware_global_pruning_cuts_the_costly_group(monkeypatch):
    import slimkit.prune.pruner as pruner_mod

    monkeypatch.setattr(pruner_mod, "measure_latency", lambda m, *a, **k: type("R", (), {"median_ms": _fake_ms(m)}))
    torch.manual_seed(0)
    model = _Net()
    x = (torch.randn(1, 3, 8, 8),)
    small = Pruner(model, x, PruneConfig(ratio=0.25, global_pruning=True, latency_aware=True)).run()
    plain = Pruner(model, x, PruneConfig(ratio=0.25, global_pruning=True)).run()
    assert small.b.out_channels < plain.b.out_channels
    assert small.b.out_channels == 16 - 10  # the whole 10-channel budget (25% of 40) came from b
    with pytest.raises(ConfigError, match="global_pruning"):
        PruneConfig(ratio=0.2, latency_aware=True)
