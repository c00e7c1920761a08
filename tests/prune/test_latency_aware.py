from dataclasses import replace

import pytest
import torch
from torch import nn

from slimkit.errors import BudgetError, ConfigError
from slimkit.profile import channel_multiple, count_macs
from slimkit.profile.cpu_cost import CpuRates, cpu_rates
from slimkit.prune import PruneConfig, Pruner, prune
from slimkit.prune.latency import LatencyModel, latency_weighted_scores, latency_weights

UNIT = CpuRates(block=1, dense_macs_per_ns=1.0, depthwise_macs_per_ns=0.25, stem_macs_per_ns=1.0,
                linear_macs_per_ns=1.0, bytes_per_ns=1e9, op_ns=0.0, elementwise_ns={})


class _Net(nn.Module):
    """Stem, an inverted residual (1x1 expand, depthwise 3x3, 1x1 project, skip), head."""

    def __init__(self, c: int = 16, e: int = 32) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.expand = nn.Conv2d(c, e, 1)
        self.dw = nn.Conv2d(e, e, 3, padding=1, groups=e)
        self.project = nn.Conv2d(e, c, 1)
        self.fc = nn.Linear(c, 2)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = x + self.project(torch.relu(self.dw(torch.relu(self.expand(x)))))
        return self.fc(x.mean((2, 3)))


def _pruner(model, x, **cfg):
    return Pruner(model, (x,), PruneConfig(ratio=0.1, **cfg))


def test_latency_model_macs_equal_the_count_of_the_pruned_model():
    torch.manual_seed(0)
    model, x = _Net().eval(), torch.randn(1, 3, 8, 8)
    p = _pruner(model, x, allocation="uniform")
    lat = LatencyModel.build(model, p.groups, (x,), UNIT)
    assert lat.macs() == count_macs(model, x)
    for ratio in (0.25, 0.5):
        keep = p.step(ratio)
        counts = {g: len(k) for g, k in keep.items()}
        assert lat.macs(counts) == pytest.approx(count_macs(p.apply(ratio), x))


def test_latency_model_time_by_hand():
    torch.manual_seed(0)
    model, x = _Net().eval(), torch.randn(1, 3, 8, 8)
    p = _pruner(model, x, allocation="uniform")
    lat = LatencyModel.build(model, p.groups, (x,), UNIT)
    # 64 pixels; dense and linear layers at 1 MAC/ns, the depthwise one at 0.25 MAC/ns (4 ns per MAC)
    dense = 64 * (16 * 3 * 9 + 32 * 16 + 16 * 32) + 2 * 16
    assert lat.time_ns() == pytest.approx(dense + 4 * 64 * 32 * 9)
    dw_group = next(g.id for g in p.groups if any(m.module == "dw" for m in g.members))
    half = 64 * (16 * 3 * 9 + 16 * 16 + 16 * 16) + 2 * 16 + 4 * 64 * 16 * 9
    assert lat.time_ns({dw_group: 16}) == pytest.approx(half)


def test_group_costs_and_weights_cut_the_slow_group_more():
    torch.manual_seed(0)
    model, x = _Net().eval(), torch.randn(1, 3, 8, 8)
    p = _pruner(model, x, allocation="uniform")
    lat = LatencyModel.build(model, p.groups, (x,), UNIT)
    costs = lat.group_costs()
    sizes = {g.id: g.size for g in p.groups}
    by = {("dw" if any(m.module == "dw" for m in g.members) else "stream"): g.id for g in p.groups}
    (t_dw, m_dw), (t_s, m_s) = costs[by["dw"]], costs[by["stream"]]
    assert t_dw / m_dw > t_s / m_s  # the depthwise group returns more ns per MAC removed
    w = latency_weights(costs, sizes)
    assert w[by["dw"]] > 1 > w[by["stream"]]
    assert sum(sizes[g] * w[g] for g in w) == pytest.approx(sum(sizes.values()))  # the average cut is kept


def test_latency_weights_by_hand():
    costs = {0: (2.0, 1.0), 1: (1.0, 1.0), 2: (0.0, 1.0), 3: (1.0, 0.0)}
    sizes = {0: 1, 1: 1, 2: 1, 3: 1}
    # mean ns per MAC = (2 + 1 + 0 + 1) / 3; relative: 1.5, 0.75, none (low bound), no MACs (high bound)
    raw = {0: 1.5, 1: 0.75, 2: 0.25, 3: 4.0}
    norm = sum(raw.values()) / 4
    w = latency_weights(costs, sizes)
    for g in raw:
        assert w[g] == pytest.approx(raw[g] / norm)


def test_weighted_scores_by_hand():
    scores = {0: torch.tensor([1.0, 3.0]), 1: torch.tensor([10.0, 30.0])}
    out = latency_weighted_scores(scores, {0: 2.0, 1: 0.0}, floor=0.1)
    # group means 2 and 20 -> both become [0.5, 1.5]; relative costs 2/2 = 1 and max(0, 0.1) = 0.1
    torch.testing.assert_close(out[0], torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(out[1], torch.tensor([5.0, 15.0]))


def test_round_to_follows_the_allocation():
    assert PruneConfig(ratio=0.5).channel_round == channel_multiple()  # default: latency, whole vector blocks
    assert PruneConfig(ratio=0.5, allocation="global_latency").channel_round == channel_multiple()
    assert PruneConfig(ratio=0.5, allocation="uniform").channel_round is None  # the old default
    assert PruneConfig(ratio=0.5, round_to=1).channel_round == 1
    with pytest.raises(ConfigError, match="allocation must be one of"):
        PruneConfig(ratio=0.5, allocation="fastest")


def _cut_out_channels(model: nn.Module, pruned: nn.Module) -> dict[str, int]:
    before = {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    return {n: m.out_channels for n, m in pruned.named_modules()
            if isinstance(m, nn.Conv2d) and m.out_channels != before[n]}


def test_default_prune_keeps_whole_vector_blocks():
    torch.manual_seed(0)
    model, x = _Net(32, 64).eval(), torch.randn(1, 3, 8, 8)
    cut = _cut_out_channels(model, prune(model, x, macs_target=0.5))
    assert cut and all(c % channel_multiple() == 0 for c in cut.values()), cut
    old = _cut_out_channels(model, prune(model, x, macs_target=0.5, allocation="uniform"))
    assert any(c % channel_multiple() for c in old.values()), old  # the old default: partial blocks


def test_default_prune_falls_back_to_unrounded_counts_when_blocks_cannot_meet_the_budget():
    torch.manual_seed(0)
    block = channel_multiple()
    model, x = _Net(block, block).eval(), torch.randn(1, 3, 8, 8)  # every group is one block: none can shrink
    with pytest.warns(UserWarning, match="whole blocks"):
        pruned = prune(model, x, macs_target=0.6)
    assert count_macs(pruned, x) <= 0.6 * count_macs(model, x)
    with pytest.raises(BudgetError):
        prune(model, x, macs_target=0.6, round_to="auto")  # an explicit rounding is kept, and fails plainly


@pytest.mark.slow
def test_default_prune_on_mobilenet_v2_keeps_blocks_and_its_time_falls_as_fast_as_its_macs():
    """The default call on MobileNetV2 keeps every cut channel count a multiple of this CPU's block, and by the
    CPU cost model its time falls at least as fast as its MACs (the old uniform cut's does not)."""
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    pruned = prune(model, x, macs_target=0.5)
    old = prune(model, x, macs_target=0.5, allocation="uniform")
    cut = _cut_out_channels(model, pruned)
    assert cut and all(c % channel_multiple() == 0 for c in cut.values()), cut
    rates = replace(cpu_rates(), op_ns=0.0)  # at 32x32 the fixed cost per operator, which no cut removes, is large
    p = Pruner(model, (x,), PruneConfig(ratio=0.1))
    base_t, base_m = LatencyModel.build(model, p.groups, (x,), rates).time_ns(), count_macs(model, x)

    def speedup_per_mac(m: nn.Module) -> float:
        q = Pruner(m, (x,), PruneConfig(ratio=0.1))
        return base_t / LatencyModel.build(m, q.groups, (x,), rates).time_ns() / (base_m / count_macs(m, x))

    assert count_macs(pruned, x) <= 0.5 * base_m
    assert speedup_per_mac(pruned) > speedup_per_mac(old)
    assert speedup_per_mac(pruned) >= 0.85


def test_rounding_error_is_carried_so_equal_groups_do_not_jump_together():
    """Eight 16-channel layers at a 30% cut want 11.2 channels each: rounding each to the nearest block of 8 would
    cut all to 8 (50%); carrying the rounding error keeps a mix of 16 and 8 near the wanted total."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), *[nn.Sequential(nn.ReLU(), nn.Conv2d(16, 16, 1)) for _ in range(8)],
                          nn.Flatten(), nn.LazyLinear(2)).eval()
    x = torch.randn(1, 3, 5, 5)
    model(x)
    p = Pruner(model, (x,), PruneConfig(ratio=0.3, allocation="uniform", round_to=8))
    kept = [len(k) for k in p.step(0.3).values()]
    assert all(k % 8 == 0 for k in kept) and set(kept) == {8, 16}
    assert abs(sum(kept) - 0.7 * 16 * len(kept)) <= 8
