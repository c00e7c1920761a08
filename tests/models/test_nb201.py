import pytest
import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.models.nb201 import BEST_CIFAR10_CELL, EDGES, OPS, NB201Network, cell_to_str, make_op, str_to_cell
from slimkit.nas.spaces import nb201 as space


def test_the_network_and_the_search_space_read_one_cell_format():
    assert space.str_to_cell is str_to_cell and space.cell_to_str is cell_to_str and space.OPS is OPS
    cell = "|skip_connect~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|skip_connect~2|"
    assert cell_to_str(str_to_cell(cell)) == cell and str_to_cell(cell) == (1, 2, 4, 0, 3, 1)
    net = NB201Network(cell, num_classes=10, in_chans=3, channels=4, cells_per_stage=1)
    first = next(m for m in net.modules() if type(m).__name__ == "Cell")
    # node j holds the ops of the edges (i -> j), in EDGES order: the same types make_op builds for them
    built = [type(op) for node in first.nodes for op in node]
    assert built == [type(make_op(OPS[o], 4)) for o in str_to_cell(cell)] and len(built) == len(EDGES)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert isinstance(make_op("nor_conv_3x3", 4), nn.Module)


@pytest.mark.parametrize("bad", ["", "|nor_conv_3x3~0|", BEST_CIFAR10_CELL.replace("~1|", "~0|", 1),
                                 BEST_CIFAR10_CELL.replace("skip_connect", "conv_5x5")])
def test_a_malformed_cell_string_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="cell string"):
        NB201Network(bad, num_classes=10, channels=4, cells_per_stage=1)
