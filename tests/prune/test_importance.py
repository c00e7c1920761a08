"""Pruning criteria against hand computations on a tiny conv-BN-conv-linear model.

Every group-level score is the mean over the group's members of that member's per-channel score divided by its mean
(so layers of different sizes weigh the same); the hand versions below compute each member's score directly from
the weights with explicit loops and autograd, not through the library's slicing."""

import pytest
import torch
from torch import nn

from slimkit.errors import PruneError
from slimkit.graph import build_dependency_graph
from slimkit.prune.importance import ImportanceContext, create_importance, list_importances


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 5, 1)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        return self.fc(self.conv2(torch.relu(self.bn1(self.conv1(x)))).mean((2, 3)))


def _setup(seed=0):
    torch.manual_seed(seed)
    model = Tiny().eval()
    with torch.no_grad():
        model.bn1.weight.uniform_(0.2, 2.0)
        model.bn1.running_var.uniform_(0.5, 2.0)
    x = torch.randn(1, 3, 6, 6)
    g = build_dependency_graph(model, x)
    (grp,) = g.group_of("bn1")
    return model, grp


def _combine(per_member):
    return torch.stack([s / s.mean() for s in per_member]).mean(0)


def test_l1_and_l2_sum_each_channels_weights_in_every_member():
    model, grp = _setup()
    w1, gamma, w2 = model.conv1.weight.detach(), model.bn1.weight.detach(), model.conv2.weight.detach()
    for name, p in (("l1", 1), ("l2", 2)):
        hand = _combine([
            torch.tensor([w1[c].abs().pow(p).sum() ** (1 / p) for c in range(4)]),
            gamma.abs(),
            torch.tensor([w2[:, c].abs().pow(p).sum() ** (1 / p) for c in range(4)]),
        ])
        torch.testing.assert_close(create_importance(name)(grp, model), hand)


def test_bn_scale_is_the_normalised_absolute_gamma():
    model, grp = _setup(1)
    gamma = model.bn1.weight.detach()
    torch.testing.assert_close(create_importance("bn_scale")(grp, model), gamma.abs() / gamma.abs().mean())


def test_fpgm_is_the_summed_distance_of_each_filter_to_the_others():
    model, grp = _setup(2)
    w = model.conv1.weight.detach().flatten(1)
    hand = torch.tensor([sum(float((w[c] - w[d]).norm()) for d in range(4)) for c in range(4)])
    torch.testing.assert_close(create_importance("fpgm")(grp, model), hand / hand.mean())


def test_taylor_averages_the_squared_group_contribution_over_batches():
    model, grp = _setup(3)
    torch.manual_seed(4)
    data = [(torch.randn(3, 3, 6, 6), torch.randint(0, 2, (3,))) for _ in range(3)]
    sq = torch.zeros(3, 4)
    for x, y in data:
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        for i, (w, g) in enumerate([(model.conv1.weight.detach(), model.conv1.weight.grad),
                                    (model.bn1.weight.detach(), model.bn1.weight.grad)]):
            for c in range(4):
                sq[i, c] += float((w[c] * g[c]).sum()) ** 2
        w2, g2 = model.conv2.weight.detach(), model.conv2.weight.grad
        for c in range(4):
            sq[2, c] += float((w2[:, c] * g2[:, c]).sum()) ** 2
    model.zero_grad(set_to_none=True)
    hand = _combine(list((sq / len(data)).sqrt()))
    got = create_importance("taylor")(grp, model, ImportanceContext(data=data))
    torch.testing.assert_close(got, hand, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # scoring leaves no gradients behind


def test_taylor_without_batches_falls_back_to_l1_and_empty_data_is_refused():
    model, grp = _setup(5)
    torch.testing.assert_close(create_importance("taylor")(grp, model), create_importance("l1")(grp, model))
    with pytest.raises(PruneError, match="no calibration batches"):
        create_importance("taylor")(grp, model, ImportanceContext(data=[]))


def test_random_is_seeded_and_every_criterion_is_registered():
    model, grp = _setup(6)
    r = create_importance("random")
    a, b = r(grp, model, ImportanceContext(seed=1)), r(grp, model, ImportanceContext(seed=1))
    assert torch.equal(a, b) and not torch.equal(a, r(grp, model, ImportanceContext(seed=2)))
    assert {"l1", "l2", "fpgm", "bn_scale", "taylor", "random", "di", "css"} <= set(list_importances())


@pytest.mark.parametrize("name", list_importances())
def test_every_registered_criterion_scores_each_channel_and_prunes(name):
    """The registry contract: a criterion registered in one file is scored and pruned with here, and appears in
    `slimkit compress --importance`'s help (tests/cli)."""
    from slimkit.prune import prune

    model, grp = _setup(7)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(2)]
    scores = create_importance(name)(grp, model, ImportanceContext(data=data))
    assert scores.shape == (4,) and torch.isfinite(scores).all()
    pruned = prune(model, torch.randn(1, 3, 6, 6), importance=name, ratio=0.5, data=data)
    assert pruned.conv1.out_channels == pruned.bn1.num_features == 2
    assert pruned(torch.randn(2, 3, 6, 6)).shape == (2, 2)


def test_a_config_without_a_criterion_prunes_by_the_default_l1():
    """importance=None is compress's "not given"; a Pruner handed it scores by L1 (was AttributeError deep inside
    the registry), keeping exactly the channels importance="l1" keeps."""
    from slimkit.prune import PruneConfig, Pruner
    from slimkit.prune.pruner import DEFAULT_IMPORTANCE

    model, _ = _setup()
    x = torch.randn(1, 3, 6, 6)
    plans = {}
    for imp in (None, "l1", "l2"):
        p = Pruner(model, (x,), PruneConfig(importance=imp, ratio=0.5, allocation="uniform"))
        plans[imp] = p.step(0.5)
        assert p.config.importance == (imp or DEFAULT_IMPORTANCE) == (imp or "l1")
    assert plans[None] == plans["l1"]
