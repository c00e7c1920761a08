"""Rules for windowed / hierarchical attention, checked on small modules written like timm's and torchvision's:
any module with `num_heads` is an attention module; per-head tables indexed by a buffer, int attributes used as
channel counts, run-time channel reads, padding / rolling, patch merging and control flow on sizes."""

import torch
from torch import nn

from slimkit.graph import build_dependency_graph
from slimkit.graph.trace import trace
from slimkit.prune import prune
from tests.prune.reference import assert_prune_matches_reference


class WindowAttention(nn.Module):
    """Swin-style: a relative-position table (L x heads) read through an index buffer, an explicit output width."""

    def __init__(self, dim=16, num_heads=4, window=3):
        super().__init__()
        self.num_heads, self.window_area = num_heads, window * window
        self.out_dim = dim  # read by forward as the merged width: becomes a member, updated by surgery
        self.scale = (dim // num_heads) ** -0.5
        self.table = nn.Parameter(torch.randn((2 * window - 1) ** 2, num_heads))
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + window - 1
        self.register_buffer("index", rel[..., 0] * (2 * window - 1) + rel[..., 1])
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.table[self.index.view(-1)].view(self.window_area, self.window_area, -1).permute(2, 0, 1)
        attn = ((q * self.scale) @ k.transpose(-2, -1) + bias.unsqueeze(0)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, self.out_dim))


class WindowNet(nn.Module):
    """Tokens on a 6 x 6 grid (channels last), padded to 9 x 9 if needed, shifted, cut into 3 x 3 windows."""

    def __init__(self, dim=16, window=3):
        super().__init__()
        self.window = window
        self.embed = nn.Conv2d(2, dim, 1)
        self.attn = WindowAttention(dim, 4, window)
        self.fc1, self.fc2 = nn.Linear(dim, 32), nn.Linear(32, dim)
        self.merge = nn.Linear(4 * dim, 24)  # patch merging: (2, 2, C) -> 4C
        self.head = nn.Linear(24, 3)

    def forward(self, x):
        x = self.embed(x).permute(0, 2, 3, 1)
        b, h, w, c = x.shape
        ws = self.window
        y = nn.functional.pad(x, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))
        y = torch.roll(y, shifts=(1, 1), dims=(1, 2))
        hp, wp = y.shape[1], y.shape[2]
        y = y.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        y = self.attn(y).view(-1, hp // ws, wp // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        x = x + torch.roll(y, shifts=(-1, -1), dims=(1, 2))[:, :h, :w]
        x = x + self.fc2(torch.relu(self.fc1(x)))
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 2, 4, 5).flatten(3)
        return self.head(self.merge(x).mean((1, 2)))


def _window_net():
    torch.manual_seed(0)
    return WindowNet().eval(), torch.randn(2, 2, 6, 6)


def test_window_attention_heads_table_and_width_attribute_are_grouped():
    model, x = _window_net()
    g = build_dependency_graph(model, x)
    (heads,) = [grp for grp in g.groups if any(m.role == "heads" for m in grp.members)]
    roles = {(m.module, m.role) for m in heads.members}
    assert {("attn.qkv", "out"), ("attn.proj", "in"), ("attn", "param:table:1"), ("attn", "attr:out_dim")} <= roles
    (stream,) = [grp for grp in g.groups if any(m.module == "embed" for m in grp.members)]
    assert {("merge", "in"), ("attn.qkv", "in"), ("fc1", "in")} <= {(m.module, m.role) for m in stream.members}
    assert sum(m.module == "merge" for m in stream.members) == 4  # the four (2, 2) positions of patch merging


def test_window_attention_pruned_equals_masked_reference():
    model, x = _window_net()
    pruned, _ = assert_prune_matches_reference(model, x, 0.5, allocation="uniform")  # half of each, on any CPU
    assert pruned.attn.num_heads == 2 and pruned.attn.table.shape == (25, 2) and pruned.attn.out_dim == 8
    assert pruned.embed.out_channels == 8 and pruned.merge.in_features == 32


class DerivedHeadWidth(nn.Module):
    """DaViT / torchvision-Swin style: the head width computed from the input width (C // heads)."""

    def __init__(self, dim=16, num_heads=4):
        super().__init__()
        self.num_heads = num_heads
        self.emb, self.qkv, self.proj = nn.Linear(6, dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.fc = nn.Linear(dim, 3)

    def forward(self, x):
        x = self.emb(x)
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        y = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.fc(self.proj(y).mean(1))


def test_a_head_width_computed_from_the_channel_count_blocks_both():
    torch.manual_seed(0)
    model, x = DerivedHeadWidth().eval(), torch.randn(2, 5, 6)
    g = build_dependency_graph(model, x)
    prunable = {m.module for grp in g.groups for m in grp.producers}
    assert "qkv" not in prunable and "emb" not in prunable
    out = prune(model, x, ratio=0.5, allocation="uniform")  # what is left prunable still prunes, and it runs
    assert out(x).shape == (2, 3)


class SizeBranch(nn.Module):
    """Control flow on a size (TinyViT: `if H == self.window_size`): traced along the example's branch."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.a(x)
        if y.shape[-1] == 8:
            y = torch.relu(y)
        else:
            y = nn.functional.avg_pool2d(y, 2)
        return self.b(y).mean((2, 3))


def test_control_flow_on_sizes_is_traced_and_the_model_prunes():
    torch.manual_seed(0)
    model, x = SizeBranch().eval(), torch.randn(1, 3, 8, 8)
    gm = trace(model, (x,))
    assert gm.meta["opaque_modules"] == []
    assert any(n.target is torch.relu for n in gm.graph.nodes)
    assert prune(model, x, ratio=0.5, allocation="uniform").a.out_channels == 4  # a hand count of a uniform cut


class _CodedSum(nn.Module):
    """x + sin(p * freq) * a + cos(p * freq) * b: buffers along the channels, combined with a tensor that is not."""

    def __init__(self, position_along_channels: bool = False):
        super().__init__()
        self.fc, self.head = nn.Linear(3, 8), nn.Linear(8, 2)
        self.register_buffer("freq", torch.rand(8))
        self.register_buffer("a", torch.rand(8))
        self.b = nn.Parameter(torch.rand(8))
        self.along = position_along_channels

    def forward(self, x):
        x = self.fc(x)
        p = torch.arange(x.shape[2 if self.along else 1], dtype=x.dtype)
        angle = (p if self.along else p.unsqueeze(1)) * self.freq
        return self.head(x + torch.sin(angle) * self.a + torch.cos(angle) * self.b)


def test_elementwise_expression_of_several_parameters_makes_each_a_member():
    x = torch.randn(2, 5, 3)
    g = build_dependency_graph(_CodedSum().eval(), x)
    (grp,) = g.group_of("fc")
    assert {("", "param:freq:0"), ("", "param:a:0"), ("", "param:b:0")} <= {(m.module, m.role) for m in grp.members}
    # a computed tensor that varies along the channels (arange(8) * freq) cannot be sliced: the channels stay whole
    g = build_dependency_graph(_CodedSum(position_along_channels=True).eval(), x)
    assert not g.group_of("fc")
