"""One-shot search (DARTS / EoiNAS) over the NAS-Bench-201 cell."""

import json

import pytest
import torch

from slimkit.errors import ConfigError
from slimkit.nas import OneShotConfig, OneShotSearch, derive_cell
from slimkit.nas.oneshot import MixedOp, SuperNet, eoinas_importance, masked_softmax, prune_step
from slimkit.nas.spaces.nb201 import OPS, str_to_cell

TINY = dict(epochs=1, channels=4, cells_per_stage=1, limit=200, batch_size=32, seed=0)


@pytest.fixture(scope="module")
def splits():
    from slimkit.data import create_dataset

    try:
        return create_dataset("fashion-mnist", None, seed=0, limit=200, val_fraction=0.5, augment=False)
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"fashion-mnist not available: {e}")


def test_mixed_op_is_the_weighted_sum_of_its_ops():
    torch.manual_seed(0)
    m = MixedOp(3).eval()
    x = torch.randn(2, 3, 6, 6)
    w = torch.softmax(torch.randn(5), 0)
    expected = sum(w[o] * m.ops[o](x) for o in range(5))
    torch.testing.assert_close(m(x, w), expected)


def test_masked_ops_contribute_nothing_and_the_softmax_renormalises():
    torch.manual_seed(0)
    m = MixedOp(3).eval()
    x = torch.randn(2, 3, 6, 6)
    alpha = torch.randn(1, 5)
    mask = torch.tensor([[False, True, False, True, True]])
    w = masked_softmax(alpha, mask)[0]
    assert w[~mask[0]].eq(0).all() and torch.isclose(w.sum(), torch.tensor(1.0))
    torch.testing.assert_close(w[mask[0]], torch.softmax(alpha[0, mask[0]], 0))
    calls = []
    hooks = [m.ops[o].register_forward_hook(lambda *a, o=o: calls.append(o)) for o in range(5)]
    out = m(x, w, mask[0])
    for h in hooks:
        h.remove()
    assert calls == [1, 3, 4]  # masked ops are not even run
    torch.testing.assert_close(out, w[1] * m.ops[1](x) + w[3] * m.ops[3](x) + w[4] * m.ops[4](x))


def test_derive_cell_takes_the_argmax_over_remaining_ops():
    alpha = torch.zeros(6, 5)
    want = [3, 0, 1, 2, 4, 3]  # 'none' may win, as in NB201's DARTS baseline
    for e, o in enumerate(want):
        alpha[e, o] = 1.0
    cell = derive_cell(alpha)
    assert str_to_cell(cell) == tuple(want)
    assert cell.startswith("|nor_conv_3x3~0|+|none~0|skip_connect~1|+")
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[0, 3] = False  # the winner of edge 0 is pruned: the runner-up (first of the ties) is kept
    alpha[0, 2] = 0.5
    assert str_to_cell(derive_cell(alpha, mask))[0] == 2
    with pytest.raises(ConfigError):
        derive_cell(alpha, torch.zeros(6, 5, dtype=torch.bool))


def test_supernet_separates_arch_and_weight_parameters():
    net = SuperNet(10, 1, channels=4, cells_per_stage=1)
    arch, weights = net.arch_parameters(), net.weight_parameters()
    assert len(arch) == 1 and arch[0].shape == (6, 5)
    assert not {id(p) for p in arch} & {id(p) for p in weights}
    assert len(arch) + len(weights) == len(list(net.parameters()))
    assert net(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_arch_step_moves_only_alpha_and_weight_step_only_weights(splits):
    s = OneShotSearch(OneShotConfig(**TINY), splits=splits, progress=False)
    x, y = next(iter(s.train_loader))

    def snap():
        return [p.detach().clone() for p in s.net.weight_parameters()], s.net.alpha.detach().clone()

    w0, a0 = snap()
    s.arch_step(x, y)
    w1, a1 = snap()
    assert all(torch.equal(u, v) for u, v in zip(w0, w1, strict=True)) and not torch.equal(a0, a1)
    assert all(p.grad is None for p in s.net.weight_parameters())
    s.weight_step(x, y)
    w2, a2 = snap()
    assert torch.equal(a1, a2) and any(not torch.equal(u, v) for u, v in zip(w1, w2, strict=True))
    assert s.net.alpha.grad is None


def test_eoinas_importance_and_pruning_remove_one_op_per_edge_never_the_last():
    torch.manual_seed(0)
    w = torch.softmax(torch.randn(6, 5), 1)
    rms = torch.rand(6, 5) + 0.1
    rms[:, 0] = 0.0  # 'none' outputs zeros
    mask = torch.ones(6, 5, dtype=torch.bool)
    imp = eoinas_importance(w, rms, mask)
    torch.testing.assert_close(imp, w * rms)
    for round_ in range(1, 7):
        imp = eoinas_importance(masked_softmax(torch.log(w), mask), rms, mask)
        new, removed = prune_step(imp, mask)
        alive_before, alive_after = mask.sum(1), new.sum(1)
        assert torch.equal(alive_after, torch.clamp(alive_before - 1, min=1))
        assert len(removed) == int((alive_before > 1).sum())
        for e, o in removed:  # the least important op that was alive
            assert mask[e, o] and imp[e, o] == imp[e][mask[e]].min()
        if round_ == 1:
            assert all(o == 0 for _, o in removed)  # zero contribution goes first
        mask = new
    assert mask.sum(1).eq(1).all()


def test_bad_config_raises_config_error():
    with pytest.raises(ConfigError, match="method"):
        OneShotConfig(method="enas")
    with pytest.raises(ConfigError):
        OneShotConfig(epochs=0)
    with pytest.raises(ConfigError):
        OneShotConfig(prune_every=0)


def test_oneshot_job_runs_writes_summary_and_resumes(tmp_path, nb201_dir):
    from slimkit.jobs.oneshot import OneShotJobConfig, run

    table = (str(nb201_dir / "nb201_cifar10_200ep.csv"),)
    search = OneShotConfig(method="eoinas", prune_every=1, **TINY)
    cfg = OneShotJobConfig(table=table, out=str(tmp_path), progress=False, search=search)
    s1 = run(cfg)
    assert s1["epochs"] == 1 and len(s1["alphas"]) == 1 and len(s1["alphas"][0]) == 6
    assert str_to_cell(s1["cell"]) and (tmp_path / "alphas.png").is_file()
    saved = json.loads((tmp_path / "summary.json").read_text())
    b = saved["benchmark"]
    assert b["metric"] == "cifar10_test_200ep" and b["of"] == 15625 and 1 <= b["rank"] <= 15625
    assert 0 < b["percentile"] <= 100
    state1 = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state1["epoch"] == 1

    cfg2 = OneShotJobConfig(table=table, out=str(tmp_path), progress=False,
                            search=OneShotConfig(**{**TINY, "epochs": 2}, method="eoinas", prune_every=1))
    s2 = run(cfg2, resume=True)
    assert s2["epochs"] == 2 and len(s2["alphas"]) == 2
    assert s2["alphas"][0] == s1["alphas"][0]  # epoch 1 was not redone
    assert s2["history"][0] == s1["history"][0]
    # one prune round ran (after epoch 1 of 2): every edge lost exactly one op
    assert len(s2["pruned"]) == 6 and all(sum(row) == 4 for row in s2["mask"])
    assert not any(s2["mask"][p["edge"]][OPS.index(p["op"])] for p in s2["pruned"])


def test_resume_continues_exactly(tmp_path, splits):
    cfg2 = OneShotConfig(**{**TINY, "epochs": 2})
    straight = OneShotSearch(cfg2, splits=splits, progress=False).fit()
    OneShotSearch(OneShotConfig(**TINY), splits=splits, run_dir=tmp_path, progress=False).fit()
    resumed = OneShotSearch(cfg2, splits=splits, run_dir=tmp_path, progress=False).fit(resume=True)
    assert resumed.epochs_run == 2 and len(resumed.alphas) == 2
    torch.testing.assert_close(torch.tensor(resumed.alphas), torch.tensor(straight.alphas))
    with pytest.raises(Exception, match="different options"):
        OneShotSearch(OneShotConfig(**{**TINY, "epochs": 2, "seed": 1}), splits=splits, run_dir=tmp_path,
                      progress=False).fit(resume=True)


def test_cli_oneshot(tmp_path, nb201_dir):
    from slimkit.cli.main import main

    out = tmp_path / "run"
    code = main(["oneshot", "--method", "darts", "--epochs", "1", "--limit", "200", "--channels", "4",
                 "--cells-per-stage", "1", "--batch-size", "32", "--table",
                 str(nb201_dir / "nb201_cifar10_200ep.csv"), "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "darts" and summary["benchmark"]["value"] > 0
    assert main(["oneshot", "--method", "nope", "--out", str(out)]) == 2
