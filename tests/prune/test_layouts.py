"""Layouts real models have that the dependency graph once missed: each is either followed exactly (pruned output ==
masked dense reference) or blocked, and the pruned model always runs."""

import math

import torch
from torch import nn

from slimkit.graph import build_dependency_graph
from slimkit.profile import count_macs
from slimkit.prune import prune

from .reference import assert_prune_matches_reference


def _modules(graph):
    return [{m.module for m in g.members} for g in graph.groups]


class GroupNormGroups(nn.Module):
    """GroupNorm with 4 groups of 4 channels between two convs (whole groups must go together)."""

    def __init__(self, groups: int = 4):
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.gn = nn.GroupNorm(groups, 16)
        self.b = nn.Conv2d(16, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.b(torch.relu(self.gn(self.a(x)))).mean((2, 3)))


def test_groupnorm_with_groups_loses_whole_groups_and_keeps_the_remaining_statistics():
    torch.manual_seed(0)
    model = GroupNormGroups().eval()
    x = torch.randn(2, 3, 8, 8)
    graph = build_dependency_graph(model, x)
    (g,) = graph.group_of("gn")
    assert g.size == 4  # one unit per GroupNorm group, each of 4 channels
    # the statistics of the groups that stay are untouched: the pruned model is the masked original, exactly
    # blocks of 8 channels (AVX2's; AVX-512's 16 would keep the one 16-channel group whole)
    pruned, pruner = assert_prune_matches_reference(model, x, 0.5, round_to=8)
    assert pruned.gn.num_groups == 2 and pruned.gn.num_channels == 8 and pruned.a.out_channels == 8
    channels = [u * 4 + j for u in pruner.step(0.5)[g.id] for j in range(4)]  # whole groups of 4
    torch.testing.assert_close(pruned.gn.weight, model.gn.weight[channels])


def test_groupnorm_over_all_channels_prunes_like_layernorm():
    torch.manual_seed(0)
    model = GroupNormGroups(groups=1).eval()  # poolformerv2's norm: GroupNorm(1, C)
    x = torch.randn(2, 3, 8, 8)
    assert any("gn" in mods for mods in _modules(build_dependency_graph(model, x)))
    pruned = prune(model, x, ratio=0.5, allocation="uniform")
    assert pruned.gn.num_groups == 1 and pruned.gn.num_channels == 8
    assert pruned(x).shape == (2, 5)


class SelectiveKernel(nn.Module):
    """skresnet's layout: the input split into fixed halves, two paths stacked, attention viewed as (B, 2, C/2)."""

    def __init__(self, c: int = 8, out: int = 12):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.half = c // 2  # a Python int: the split stays at this size whatever pruning does
        self.paths = nn.ModuleList([nn.Conv2d(c // 2, out, 3, padding=1), nn.Conv2d(c // 2, out, 5, padding=2)])
        self.reduce = nn.Conv2d(out, 6, 1)
        self.select = nn.Conv2d(6, 2 * out, 1)
        self.head = nn.Conv2d(out, 7, 1)

    def forward(self, x):
        x = self.stem(x)
        parts = torch.split(x, self.half, 1)
        x = torch.stack([p(parts[i]) for i, p in enumerate(self.paths)], dim=1)  # B, 2, C, H, W
        a = self.select(torch.relu(self.reduce(x.sum(1).mean((2, 3), keepdim=True))))
        b, c, h, w = a.shape
        a = torch.softmax(a.view(b, 2, c // 2, h, w), dim=1)
        return self.head((x * a).sum(1)).mean((2, 3))


def test_fixed_split_blocks_its_input_and_stacked_paths_stay_coupled():
    torch.manual_seed(0)
    model = SelectiveKernel().eval()
    x = torch.randn(2, 3, 8, 8)
    graph = build_dependency_graph(model, x)
    assert not any("stem" in mods for mods in _modules(graph))  # the split's sizes are fixed: blocked
    blocked = [r for g, r in graph.blocked if any(m.module == "stem" and m.role == "out" for m in g.members)]
    assert blocked == ["split: split into fixed sizes"]
    # both paths, the attention's select rows (c and c + C/2 tied) and the head's input are one group
    (paths,) = graph.group_of("paths.0")
    assert {"paths.0", "paths.1", "reduce", "select", "head"} <= {m.module for m in paths.members}
    pruned, _ = assert_prune_matches_reference(model, x, 0.5, allocation="uniform")
    assert pruned.stem.out_channels == 8 and pruned.paths[0].out_channels == 6 and pruned.select.out_channels == 12


class ReshapeToInputWidth(nn.Module):
    """An attention-like block whose output is reshaped to its *input's* width (`B, N, C = x.shape`), as in timm's
    relative-position ViTs: the two widths are one space."""

    def __init__(self, d: int = 8, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(5, d)
        self.v = nn.Linear(d, d)
        self.mlp = nn.Linear(d, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x):
        x = self.embed(x)
        b, n, c = x.shape
        v = self.v(x).reshape(b, n, self.heads, -1).transpose(1, 2)  # B, H, N, D
        x = x + v.transpose(1, 2).reshape(b, n, c)
        return self.out(torch.relu(self.mlp(x))).mean(1)


def test_run_time_width_of_another_tensor_couples_the_two():
    torch.manual_seed(0)
    model = ReshapeToInputWidth().eval()
    x = torch.randn(2, 4, 5)
    pruned = prune(model, x, ratio=0.5, allocation="uniform")
    assert pruned(x).shape == (2, 3)
    assert pruned.embed.out_features == pruned.v.out_features  # pruned together, or both kept


class ScaledConv(nn.Conv2d):
    """timm's ScaledStdConv2d: a Conv2d subclass with a per-output-channel `gain`."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight * self.gain, self.bias, self.stride, self.padding)


def test_extra_per_channel_tensor_of_a_conv_subclass_is_sliced_with_its_rows():
    torch.manual_seed(0)
    model = nn.Sequential(ScaledConv(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    x = torch.randn(2, 3, 6, 6)
    pruned, _ = assert_prune_matches_reference(model, x, 0.5, allocation="uniform")
    assert pruned[0].gain.shape == (4, 1, 1, 1)


def _untraceable_helper(x, size):
    side = int(math.sqrt(x.shape[1]))  # math on a traced value: torch.fx cannot trace this function
    return x.reshape(x.shape[0], side, side, size).permute(0, 3, 1, 2)


class HelperFunction(nn.Module):
    """Nest / CrossViT: the model's forward calls a module-level helper fx cannot trace."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(3, 8)
        self.mlp1, self.mlp2 = nn.Linear(8, 32), nn.Linear(32, 8)
        self.conv = nn.Conv2d(8, 4, 1)

    def forward(self, x, mask=None):
        x = self.a(x)
        if mask is not None:  # an optional argument: traced at its default
            x = x * mask
        x = x + self.mlp2(torch.relu(self.mlp1(x)))
        return self.conv(_untraceable_helper(x, 8)).mean((2, 3))


def test_untraceable_helper_function_is_kept_whole_and_the_rest_prunes():
    torch.manual_seed(0)
    model = HelperFunction().eval()
    x = torch.randn(2, 16, 3)
    graph = build_dependency_graph(model, x)
    assert "_untraceable_helper" in graph.gm.meta["opaque_functions"]
    assert [{"mlp1", "mlp2"}] == [mods for mods in _modules(graph) if "mlp1" in mods]
    pruned = prune(model, x, ratio=0.5, allocation="uniform")
    assert pruned.mlp1.out_features == 16 and pruned.a.out_features == 8  # the helper's input stays whole
    torch.testing.assert_close(pruned(x).shape, model(x).shape)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else -self.conv(x)  # data-dependent: no fx trace


class OneOpaqueBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.odd = Untraceable()
        self.b, self.c = nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(self.odd(self.a(x))))).mean((2, 3))


def test_a_model_that_fx_fails_on_in_one_submodule_prunes_the_rest():
    torch.manual_seed(0)
    model = OneOpaqueBlock().eval()
    x = torch.randn(2, 3, 8, 8)
    pruned = prune(model, x, macs_target=0.7, allocation="uniform")
    assert pruned.odd.conv.out_channels == 8 and pruned.a.out_channels == 8  # around the opaque block: whole
    assert pruned.b.out_channels < 16
    assert count_macs(pruned, x) <= 0.7 * count_macs(model, x)
    assert pruned(x).shape == (2, 4)


class GhostGate(nn.Module):
    """GhostNetV2/V3's module: [x, depthwise(x)] concatenated, times an upsampled sigmoid gate of the full width made
    from the block input (DFC attention): the gate's channel c and c + 8 meet channel c of x."""

    def __init__(self):
        super().__init__()
        self.primary = nn.Conv2d(3, 8, 1)
        self.cheap = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.short = nn.Conv2d(3, 16, 1)
        self.head = nn.Conv2d(16, 6, 1)

    def forward(self, x):
        x1 = torch.relu(self.primary(x))
        out = torch.cat([x1, self.cheap(x1)], 1)
        gate = torch.sigmoid(self.short(nn.functional.avg_pool2d(x, 2)))
        out = out[:, :16] * nn.functional.interpolate(gate, size=out.shape[-2:], mode="nearest")
        return self.head(out).mean((2, 3))


def test_ghost_module_gate_of_the_concatenated_width_prunes_both_copies_together():
    torch.manual_seed(0)
    model = GhostGate().eval()
    x = torch.randn(2, 3, 8, 8)
    graph = build_dependency_graph(model, x)
    (g,) = graph.group_of("primary")
    assert g.size == 8 and {"cheap", "short", "head"} <= {m.module for m in g.members}
    pruned, pruner = assert_prune_matches_reference(model, x, 0.5, allocation="uniform")
    kept = pruner.step(0.5)[g.id]
    assert pruned.primary.out_channels == pruned.cheap.out_channels == 4 and pruned.head.in_channels == 8
    torch.testing.assert_close(pruned.short.weight, model.short.weight[kept + [c + 8 for c in kept]])


class Mixed(nn.Module):
    """MixNet's MixedConv2d: the input split into the sizes listed in `self.splits`, one conv per part, concatenated."""

    def __init__(self, splits: list[int], outs: list[int], kernels: list[int], depthwise: bool):
        super().__init__()
        self.splits = splits
        self.convs = nn.ModuleList(nn.Conv2d(i, o, k, padding=k // 2, groups=i if depthwise else 1)
                                   for i, o, k in zip(splits, outs, kernels, strict=True))

    def forward(self, x):
        parts = torch.split(x, self.splits, 1)
        return torch.cat([c(parts[i]) for i, c in enumerate(self.convs)], 1)


class MixBlock(nn.Module):
    """A pointwise mixed conv (two parts of 6) feeding a depthwise one split at other boundaries (4 | 4 | 4), added
    to its input: every boundary (6, 4, 8) is a multiple of 2."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.pw = Mixed([6, 6], [6, 6], [1, 1], depthwise=False)
        self.dw = Mixed([4, 4, 4], [4, 4, 4], [3, 5, 7], depthwise=True)
        self.head = nn.Conv2d(12, 5, 1)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        return self.head(x + self.dw(torch.relu(self.pw(x)))).mean((2, 3))


def test_split_sizes_held_in_an_attribute_are_pruned_in_step_and_rewritten():
    torch.manual_seed(0)
    model = MixBlock().eval()
    x = torch.randn(2, 3, 8, 8)
    graph = build_dependency_graph(model, x)
    assert not graph.blocked or all(r in ("model input", "model output") for _, r in graph.blocked)
    (g,) = graph.group_of("stem")
    assert g.size == 2  # channel c of every part and segment is cut with channel c mod 2 (gcd of 6, 6, 4, 4, 4)
    assert {("pw", "sizes:splits"), ("dw", "sizes:splits")} <= {(m.module, m.role) for m in g.members}
    pruned, pruner = assert_prune_matches_reference(model, x, 0.5, allocation="uniform")
    assert pruned.pw.splits == [3, 3] and pruned.dw.splits == [2, 2, 2] and pruned.stem.out_channels == 6
    assert [c.out_channels for c in pruned.dw.convs] == [2, 2, 2] and pruned.head.in_channels == 6
