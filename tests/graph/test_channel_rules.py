"""Channel rules are registered by the module class (CHANNEL_RULES), never named in the analysis: a user's own
layer registered as "conv" is traced as one node, grouped and sliced like nn.Conv2d."""

import torch
import torch.nn.functional as F
from torch import nn

from slimkit.graph import build_dependency_graph
from slimkit.graph.rules import conv_types, declared_rule
from slimkit.layers import DynamicConv2d
from slimkit.prune import prune
from slimkit.prune.record import record_of
from slimkit.registry import CHANNEL_RULES


@CHANNEL_RULES.register("test_user_conv", rule="conv")
class UserConv(nn.Module):
    """A conv whose forward the analysis could not follow (a scaled weight), with nn.Conv2d's layout."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.groups = cin, cout, 1
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.randn(cout) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * 2.0, self.bias, 1, 1)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(UserConv(3, 8), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten()).eval()


def test_registered_classes_are_read_from_the_registry():
    assert declared_rule(UserConv(3, 8)) == "conv" and UserConv in conv_types()
    assert declared_rule(DynamicConv2d(4, 4, 3)) == "conv" and declared_rule(nn.Conv2d(3, 3, 1)) is None
    assert CHANNEL_RULES.meta("dynamic_conv2d")["pooled_input"] == "fc1"


def test_a_users_registered_conv_is_grouped_and_pruned_like_a_conv():
    model, x = _net(), torch.randn(2, 3, 8, 8)
    graph = build_dependency_graph(model, x)
    (group,) = graph.group_of("0")
    assert {(m.module, m.role) for m in group.members} >= {("0", "out"), ("2", "in")}
    pruned = prune(model, x, ratio=0.5, allocation="uniform").eval()
    assert pruned[0].out_channels == 4 and pruned[0].weight.shape == (4, 3, 3, 3) and pruned[2].in_channels == 4
    kept = next(k for n, r, k in record_of(pruned)["steps"][0] if (n, r) == ("0", "out"))
    dense = _net()
    with torch.no_grad():  # the dense reference: the removed channels' filters and bias zeroed (ReLU(0) = 0)
        gone = [c for c in range(8) if c not in kept]
        dense[0].weight[gone] = 0
        dense[0].bias[gone] = 0
    torch.testing.assert_close(pruned(x), dense(x), atol=1e-5, rtol=1e-5)
