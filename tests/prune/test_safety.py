"""The safety net: a group the graph got wrong is found by running the pruned model, kept whole, and said so."""

import pytest
import torch
from torch import nn

from slimkit.errors import PruneError
from slimkit.graph import Member
from slimkit.prune import PruneConfig, Pruner
from slimkit.prune.safety import find_culprits


class Chain(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.c(torch.relu(self.b(torch.relu(self.a(x))))).mean((2, 3)))


def _mis_analysed(pruner: Pruner, module: str) -> int:
    """Drop the consumer member of `module`'s output group, as if the graph had missed that coupling."""
    (g,) = [g for g in pruner.groups if any(m.module == module and m.role == "out" for m in g.members)]
    g.members[:] = [m for m in g.members if m.role != "in"]
    return g.id


def test_a_mis_analysed_group_is_kept_whole_and_the_rest_is_pruned():
    torch.manual_seed(0)
    model = Chain().eval()
    x = torch.randn(2, 3, 8, 8)
    pruner = Pruner(model, (x,), PruneConfig(ratio=0.5, allocation="uniform"))
    bad = _mis_analysed(pruner, "a")  # pruning a's rows alone leaves b expecting 8 channels
    with pytest.warns(UserWarning, match="kept whole"):
        pruned = pruner.apply(0.5)
    assert pruned(x).shape == (2, 4)
    assert pruned.a.out_channels == 8 and pruned.b.out_channels == 4 and pruned.c.out_channels == 4
    assert bad not in {g.id for g in pruner.groups}
    (entry,) = pruned.slimkit_pruning["kept_whole"]
    assert entry["modules"] == ["a"] and "channels" in entry["error"]


def test_the_budget_search_prunes_around_a_group_kept_whole():
    torch.manual_seed(0)
    model = Chain().eval()
    x = torch.randn(2, 3, 8, 8)
    pruner = Pruner(model, (x,), PruneConfig(macs_target=0.6, allocation="uniform"))
    _mis_analysed(pruner, "b")
    with pytest.warns(UserWarning, match="kept whole"):
        pruned = pruner.run()
    from slimkit.profile import count_macs

    assert pruned.b.out_channels == 8 and pruned(x).shape == (2, 4)
    assert count_macs(pruned, x) <= 0.6 * count_macs(model, x)
    record = pruned.slimkit_pruning
    assert record["budget"]["counted"] == record["budget"]["computed"] == count_macs(pruned, x)
    assert record["kept_whole"][0]["modules"] == ["b"]


def test_when_every_group_breaks_nothing_is_returned():
    model = Chain().eval()
    x = torch.randn(2, 3, 8, 8)
    pruner = Pruner(model, (x,), PruneConfig(ratio=0.5, allocation="uniform"))
    for name in ("a", "b", "c"):
        _mis_analysed(pruner, name)
    with pytest.warns(UserWarning), pytest.raises(PruneError, match="nothing could be pruned"):
        pruner.apply(0.5)


def test_group_testing_finds_every_culprit_and_keeps_a_breaking_pair_together():
    groups = [type("G", (), {"id": i})() for i in range(10)]
    calls = []

    def breaks(subset):
        ids = {g.id for g in subset}
        calls.append(ids)
        return bool(ids & {3, 7}) or {5, 6} <= ids  # 3 and 7 break alone, 5 and 6 only together

    found = {g.id for g in find_culprits(groups, breaks)}
    assert {3, 7} <= found and found <= {3, 5, 6, 7} and len(calls) < 30
    assert find_culprits([], breaks) == []


def test_a_surgery_refusal_is_an_engine_failure_not_a_crash():
    torch.manual_seed(0)
    model = Chain().eval()
    x = torch.randn(2, 3, 8, 8)
    pruner = Pruner(model, (x,), PruneConfig(ratio=0.5, allocation="uniform"))
    (g,) = [g for g in pruner.groups if any(m.module == "b" and m.role == "out" for m in g.members)]
    g.members.append(Member("fc", "heads"))  # a role surgery refuses for a Linear
    with pytest.warns(UserWarning, match="surgery"):
        pruned = pruner.apply(0.5)
    assert pruned.b.out_channels == 8 and pruned(x).shape == (2, 4)

