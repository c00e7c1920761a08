"""Multi-dimensional pruning: groups by dimension, per-dimension ratios, and zero-importance heads / neurons that
leave the output identical (a head whose output-projection columns are zero, a neuron whose fc2 column is zero)."""

import pytest
import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.graph import build_dependency_graph
from slimkit.layers.tokens import Block
from slimkit.prune import group_dimension, prune

DIM, HEADS = 16, 4


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Linear(6, DIM)
        self.blocks = nn.Sequential(Block(DIM, HEADS, qkv_bias=True), Block(DIM, HEADS, qkv_bias=True))
        self.head = nn.Linear(DIM, 3)

    def forward(self, x):
        return self.head(self.blocks(self.emb(x)).mean(1))


def _net():
    torch.manual_seed(0)
    return Net().eval(), torch.randn(2, 5, 6)


def _data(x_shape=(16, 5, 6), n=2):
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(*x_shape, generator=g), torch.randint(0, 3, (x_shape[0],), generator=g)) for _ in range(n)]


def test_groups_are_sorted_into_heads_neurons_and_embed():
    model, x = _net()
    kinds = {}
    for g in build_dependency_graph(model, x).groups:
        kinds.setdefault(group_dimension(g), set()).update(m.module for m in g.producers)
    assert kinds["heads"] == {"blocks.0.attn.qkv", "blocks.1.attn.qkv"}
    assert kinds["neurons"] == {"blocks.0.mlp.fc1", "blocks.1.mlp.fc1"}
    assert "emb" in kinds["embed"] and "blocks.0.attn.proj" in kinds["embed"]


def test_dims_and_ratios_prune_only_what_they_name():
    model, x = _net()
    heads = prune(model, x, ratio=0.5, dims=["heads"])
    assert [b.attn.num_heads for b in heads.blocks] == [2, 2]
    assert heads.blocks[0].mlp.fc1.out_features == 4 * DIM and heads.emb.out_features == DIM
    mixed = prune(model, x, ratios={"heads": 0.25, "neurons": 0.5})
    assert [b.attn.num_heads for b in mixed.blocks] == [3, 3]
    assert mixed.blocks[1].mlp.fc1.out_features == 2 * DIM and mixed.emb.out_features == DIM
    assert mixed.slimkit_pruning["dims"] == {"heads": 0.25, "neurons": 0.5}
    with pytest.raises(ConfigError, match="unknown dimensions"):
        prune(model, x, ratio=0.5, dims=["layers"])
    with pytest.raises(ConfigError, match="exactly one budget"):
        prune(model, x, ratio=0.5, ratios={"heads": 0.5})


def test_zero_importance_head_and_neuron_leave_the_output_identical():
    """In each block one head has zero output-projection columns and one neuron a zero fc2 column: their Taylor
    importance is exactly 0 (no gradient reaches them either), so they go first, and removing them does not
    change the function."""
    model, x = _net()
    with torch.no_grad():
        for b, (head, neuron) in enumerate([(1, 3), (2, 7)]):
            model.blocks[b].attn.proj.weight[:, 4 * head: 4 * head + 4] = 0
            model.blocks[b].mlp.fc2.weight[:, neuron] = 0
    pruned = prune(model, x, ratios={"heads": 0.25, "neurons": 1 / 64}, importance="taylor", data=_data())
    assert [b.attn.num_heads for b in pruned.blocks] == [3, 3]
    assert [b.mlp.fc1.out_features for b in pruned.blocks] == [63, 63]
    kept_rows = pruned.blocks[1].mlp.fc1.weight
    assert not any(torch.equal(kept_rows[i], model.blocks[1].mlp.fc1.weight[7]) for i in range(63))
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), model(x), atol=1e-6, rtol=0)


@pytest.fixture
def no_scoring(monkeypatch):
    """Fail the test if pruning gets as far as scoring channels (every check comes before)."""
    import slimkit.prune.pruner as pruner_mod

    def boom(*a, **k):
        raise AssertionError("the dimensions must be checked before any channel is scored")

    monkeypatch.setattr(pruner_mod, "ImportanceContext", boom)


def _cnn():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    return net.eval(), torch.randn(2, 1, 6, 6)


@pytest.mark.parametrize("kw, said", [
    ({"ratio": 0.3, "dims": ["heads"]}, "dims names ['heads'], which Sequential does not have"),
    ({"ratios": {"heads": 0.3}}, "ratios names ['heads'], which Sequential does not have"),
    ({"ratios": {"tokens": 0.3}, "token_method": "drop"}, "no stack of blocks over N x T x C tokens"),
])
def test_a_dimension_the_model_lacks_is_an_error_naming_those_it_has(kw, said, no_scoring):
    """A CNN has no heads and no token sequence: naming them was a model returned unpruned (heads) or a bare
    PruneError without the dimensions the model does have (tokens)."""
    model, x = _cnn()
    with pytest.raises(ConfigError) as err:
        prune(model, x, **kw)
    assert said in str(err.value) and "it can be pruned along neurons; choose from those" in str(err.value)


@pytest.mark.parametrize("kw, said", [
    ({"ratio": 0.3, "dims": ()}, "dims is empty"),  # pruned every dimension
    ({"ratio": 0.3, "dims": "heads"}, "got 'heads'"),  # read as the names 'h', 'e', 'a', 'd', 's'
    ({"ratios": ["heads"]}, "takes a mapping"),  # a bare ValueError from dict()
    ({"ratios": {}}, "ratios is empty"),
    ({"ratios": {"heads": "0.3"}}, "heads '0.3' is not a number"),
    ({"ratios": {"heads": 1.0}}, "heads 1.0 is outside"),
    ({"dims": ["heads"], "ratios": {"neurons": 0.3}}, "names ['neurons'], which dims ['heads'] leaves out"),
    ({"ratio": 0.3, "dims": ["heads"], "token_method": "merge"}, "token_method applies to token pruning only"),
    ({"ratio": 0.3, "token_layers": [0]}, "token_layers applies to token pruning only"),
])
def test_dims_ratios_and_token_options_are_checked_before_any_work(kw, said, no_scoring):
    """Each used to prune something other than asked (every dimension, neurons against dims, token options
    ignored) or to fail with a bare or misleading message."""
    model, x = _net()
    with pytest.raises(ConfigError) as err:
        prune(model, x, **kw)
    assert said in str(err.value)
