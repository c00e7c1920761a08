"""Pruning-ratio search: GP-EI (slimkit's BO strategy) over per-dimension ratios meets its MACs budget."""

import numpy as np
import pytest
import torch

from slimkit.errors import BudgetError, ConfigError
from slimkit.nas.prune_ratios import RatioSpace, search_prune_ratios
from slimkit.profile import count_macs
from slimkit.prune.record import record_of
from tests.prune.test_tokens import TinyViT, _data


def test_ratio_space_grid_neighbours_and_encodings():
    space = RatioSpace(("heads", "tokens"), (0.0, 0.25, 0.5))
    assert len(space.enumerate()) == 9
    assert space.ratios((1, 2)) == {"heads": 0.25, "tokens": 0.5}
    assert sorted(space.neighbours((0, 1))) == [(0, 0), (0, 2), (1, 1)]
    np.testing.assert_allclose(space.encode((1, 2), "ratios"), [0.25, 0.5])
    assert space.from_key(space.key((2, 0))) == (2, 0)
    with pytest.raises(ConfigError, match="increasing"):
        RatioSpace(("heads",), (0.5, 0.1))


@pytest.mark.slow
def test_ratio_search_meets_its_budget_and_uses_bo():
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(1, 1, 16, 16)
    data = _data(3)
    result = search_prune_ratios(model, x, macs_target=0.6, data=data[:2], eval_data=data[2:], queries=8, init=4,
                                 grid=(0.0, 0.25, 0.5, 0.75))
    assert result.search.strategy == "bo" and len(result.search.history) == 8
    assert all(t.costs["macs"] <= 0.6 + 1e-9 for t in result.search.history if t.feasible)
    kept = count_macs(result.model, x) / count_macs(model, x)
    assert kept <= 0.6 and kept == pytest.approx(result.macs)
    assert set(result.ratios) == {"heads", "neurons", "embed", "tokens"}  # the default: every dimension it has
    assert all(result.ratios[d] <= result.searched_ratios[d] for d in result.ratios)  # relaxed towards the budget
    assert result.model(x).shape == (1, 3)


def test_ratio_search_searches_the_embedding_by_default_and_drops_what_the_model_lacks():
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(1, 1, 16, 16)
    result = search_prune_ratios(model, x, macs_target=0.9, data=_data(1), queries=2, init=2, grid=(0.0, 0.5),
                                 relax=False)
    assert result.search.history and set(result.ratios) == {"heads", "neurons", "embed", "tokens"}
    assert record_of(result.model)["importance"] == "taylor"  # the default criterion: first-order Taylor on `data`
    embed = result.ratios["embed"]  # the residual stream (patch embedding, class token, position embedding)
    assert result.model.cls_token.shape[-1] == model.cls_token.shape[-1] - round(embed * model.cls_token.shape[-1])
    # a model without a token stack (a plain MLP over the embedding) keeps only the dimensions it has
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    only = search_prune_ratios(mlp, x, macs_target=0.9, data=_data(1), queries=2, init=2, grid=(0.0, 0.5))
    assert set(only.ratios) == {"neurons"}


def test_ratio_search_refuses_an_unreachable_budget_and_bad_targets():
    torch.manual_seed(0)
    model, x = TinyViT().eval(), torch.randn(1, 1, 16, 16)
    with pytest.raises(BudgetError, match="above the target"):
        search_prune_ratios(model, x, macs_target=0.01, data=_data(1), dims=("heads",), grid=(0.0, 0.5), queries=2)
    with pytest.raises(ConfigError, match="fraction of MACs"):
        search_prune_ratios(model, x, macs_target=1.5, data=_data(1))


def test_ratio_search_checks_its_arguments_before_any_work(monkeypatch):
    """Named dimensions the model lacks used to be dropped silently (tokens of a model without a token stack);
    a string target was a TypeError; queries=1, empty dims: errors only after the model was scored."""
    import slimkit.nas.prune_ratios as prune_ratios

    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, 16)
    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3))
    with pytest.raises(ConfigError, match=r"dims names \['tokens'\], which Sequential does not have .*it can be "
                                          r"pruned along neurons"):
        search_prune_ratios(mlp, x, macs_target=0.9, data=_data(1), dims=("neurons", "tokens"), queries=2)
    monkeypatch.setattr(prune_ratios, "Pruner", lambda *a, **k: pytest.fail("scored before the arguments were checked"))
    for kw, said in (({"dims": ()}, "dims is empty"), ({"dims": "heads"}, "got 'heads'"),
                     ({"macs_target": "0.5"}, "a number in (0, 1)"), ({"queries": 1}, "queries must be"),
                     ({"init": 1}, "init must be"), ({"token_method": "fast"}, "token_method must be one of")):
        with pytest.raises(ConfigError) as err:
            search_prune_ratios(TinyViT().eval(), x, **{"macs_target": 0.6, "data": _data(1), **kw})
        assert said in str(err.value), (kw, str(err.value))
