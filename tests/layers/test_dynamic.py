"""Dynamic ReLU (A/B/C) and Dynamic Convolution against hand computations; fuse() equality."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from slimkit.errors import ConfigError
from slimkit.layers import DynamicConv2d, DynamicReLU, annealed_temperature, fuse_model, set_dynamic_temperature


def _hyper(m, x):
    """The hyper-function by hand: pool, fc1, ReLU, fc2, 2 * hard_sigmoid - 1 (hard_sigmoid = clip(v/6 + 1/2))."""
    v = x.mean((2, 3)) @ m.fc1.weight.T + m.fc1.bias
    v = torch.clamp(v, min=0) @ m.fc2.weight.T + m.fc2.bias
    return 2 * torch.clamp(v / 6 + 0.5, 0, 1) - 1


@pytest.mark.parametrize("mode", ["A", "B", "C"])
def test_dynamic_relu_matches_the_definition(mode):
    torch.manual_seed(0)
    c, k = 6, 3
    m = DynamicReLU(c, mode=mode, k=k, reduction=2).eval()
    x = torch.randn(2, c, 4, 5)
    theta = _hyper(m, x)  # N x 2K (A) or N x 2KC (B, C): [da_1..da_K, db_1..db_K], each block of C (or 1)
    per = 1 if mode == "A" else c
    out = torch.empty_like(x)
    for n in range(2):
        for ch in range(c):
            j = 0 if mode == "A" else ch
            a = [(1.0 if i == 0 else 0.0) + 1.0 * theta[n, i * per + j] for i in range(k)]
            b = [0.5 * theta[n, (k + i) * per + j] for i in range(k)]
            out[n, ch] = torch.stack([a[i] * x[n, ch] + b[i] for i in range(k)]).amax(0)
    if mode == "C":  # spatial attention pi = min(HW/3 * softmax(conv(x) / 10), 1), per position, multiplies
        z = torch.einsum("oc,nchw->nohw", m.spatial.weight[:, :, 0, 0], x) + m.spatial.bias[:, None, None]
        pi = torch.clamp(torch.softmax(z.flatten(1) / 10, 1) * (20 / 3), max=1).view(2, 1, 4, 5)
        out = out * pi
    torch.testing.assert_close(m(x), out)


def test_dynamic_relu_starts_as_relu_when_the_hyper_function_is_zero():
    m = DynamicReLU(4, mode="B")
    nn.init.zeros_(m.fc2.weight)
    nn.init.zeros_(m.fc2.bias)
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(m(x), torch.relu(x))


def test_dynamic_relu_rejects_bad_settings():
    with pytest.raises(ConfigError, match="mode"):
        DynamicReLU(4, mode="D")
    with pytest.raises(ConfigError, match="init_a"):
        DynamicReLU(4, k=2, init_a=[1.0])


@pytest.mark.parametrize("groups,cin,cout,stride,bias", [(1, 6, 8, 1, True), (2, 6, 8, 2, False), (6, 6, 12, 1, True)])
def test_dynamic_conv_equals_per_sample_conv_with_the_aggregated_kernel(groups, cin, cout, stride, bias):
    torch.manual_seed(1)
    m = DynamicConv2d(cin, cout, 3, stride=stride, groups=groups, bias=bias, num_kernels=3, temperature=2.0)
    if bias:
        nn.init.normal_(m.bias)
    x = torch.randn(3, cin, 7, 7)
    y = m(x)
    logits = torch.relu(x.mean((2, 3)) @ m.fc1.weight.T + m.fc1.bias) @ m.fc2.weight.T + m.fc2.bias
    pi = torch.softmax(logits / 2.0, 1)
    for i in range(3):
        w = sum(pi[i, k] * m.weight[:, :, k] for k in range(3))
        b = sum(pi[i, k] * m.bias[:, k] for k in range(3)) if bias else None
        torch.testing.assert_close(y[i: i + 1], F.conv2d(x[i: i + 1], w, b, stride, 1, groups=groups))
    y.sum().backward()  # every kernel and the attention get gradients
    assert all(float(m.weight.grad[:, :, k].abs().sum()) > 0 for k in range(3)) and m.fc1.weight.grad is not None


def test_dynamic_conv_mixed_form_used_for_export_is_equal():
    torch.manual_seed(2)
    m = DynamicConv2d(4, 6, 3, bias=True, temperature=5.0)
    nn.init.normal_(m.bias)
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(m._mixed_outputs(x, m.attention(x)), m(x), atol=1e-5, rtol=1e-5)


def test_fuse_fixed_attention_gives_an_equal_plain_conv_and_folds_bn():
    torch.manual_seed(3)
    model = nn.Sequential(DynamicConv2d(3, 8, 3, bias=True), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)))
    for bn in (model[1], model[3][1]):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(2, 3, 6, 6)
    with pytest.raises(ConfigError, match="depends on the input"):
        model[0].fuse()
    model[0].fix_attention([0.1, 0.2, 0.3, 0.4])
    fused = fuse_model(model)
    assert type(fused[0]) is nn.Conv2d and not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert isinstance(model[0], DynamicConv2d)  # the original is untouched
    torch.testing.assert_close(fused(x), model(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="5 weights for 4 kernels"):
        model[0].fuse([0.2] * 5)


def test_temperature_schedule_and_setter():
    assert annealed_temperature(0) == 30.0 and annealed_temperature(5) == 15.5 and annealed_temperature(12) == 1.0
    model = nn.Sequential(DynamicConv2d(3, 4, 1), nn.ReLU(), DynamicConv2d(4, 4, 3))
    assert set_dynamic_temperature(model, 7.0) == 2 and model[2].temperature == 7.0
    x = torch.randn(2, 3, 5, 5)
    set_dynamic_temperature(model, 1e6)  # a very hot softmax: uniform attention
    torch.testing.assert_close(model[0].attention(x), torch.full((2, 4), 0.25))


def test_the_temperature_is_saved_and_reloaded_with_the_weights(tmp_path):
    """A model trained to temperature 1 must not come back at the constructor's 30 (its outputs would change)."""
    from slimkit.models import load_weights
    from slimkit.train.checkpoint import save_weights

    torch.manual_seed(0)
    model = nn.Sequential(DynamicConv2d(3, 4, 3), nn.ReLU(), DynamicConv2d(4, 4, 1)).eval()
    set_dynamic_temperature(model, 1.0)
    x = torch.randn(2, 3, 6, 6)
    save_weights(model, tmp_path / "m.safetensors")
    back = nn.Sequential(DynamicConv2d(3, 4, 3), nn.ReLU(), DynamicConv2d(4, 4, 1)).eval()
    assert float(back[0].temperature) == 30.0
    load_weights(back, tmp_path / "m.safetensors")
    assert float(back[0].temperature) == float(back[2].temperature) == 1.0
    torch.testing.assert_close(back(x), model(x))
