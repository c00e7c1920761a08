"""Feature KD and ProxylessKD against hand computations (values and gradients)."""

import math

import pytest
import torch

from slimkit.distill import FeatureAdapter, feature_kd_loss, proxyless_kd_loss, teacher_classifier
from slimkit.errors import DistillError
from slimkit.models import create_model


def test_feature_loss_is_mse_with_gradient():
    torch.manual_seed(0)
    s = torch.randn(2, 3, 4, 4, requires_grad=True)
    t = torch.randn(2, 3, 4, 4)
    loss = feature_kd_loss(s, t)
    assert loss.item() == pytest.approx(((s - t) ** 2).sum().item() / s.numel(), rel=1e-6)
    loss.backward()
    torch.testing.assert_close(s.grad, 2 * (s - t).detach() / s.numel())


def test_adapter_maps_channels_and_size():
    adapter = FeatureAdapter(8, 16).eval()
    out = adapter(torch.randn(2, 8, 7, 7), size=(4, 4))
    assert out.shape == (2, 16, 4, 4)
    with pytest.raises(DistillError, match="FeatureAdapter"):
        feature_kd_loss(torch.randn(2, 8, 4, 4), torch.randn(2, 16, 4, 4))
    with pytest.raises(DistillError, match="student features"):
        adapter(torch.randn(2, 5, 4, 4))


def test_proxyless_softmax_is_ce_through_teacher_head():
    torch.manual_seed(0)
    teacher = create_model("convnet_tiny", num_classes=5)
    w, b = teacher_classifier(teacher)
    e = torch.randn(4, w.shape[1], requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    loss = proxyless_kd_loss(e, w, y, bias=b)
    logits = e @ w.T + b
    hand = -sum(logits[i, y[i]] - torch.logsumexp(logits[i], 0) for i in range(4)) / 4
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    loss.backward()
    p = torch.softmax(logits.detach(), 1)
    grad = (p - torch.nn.functional.one_hot(y, 5)) @ w / 4
    torch.testing.assert_close(e.grad, grad)
    assert w.grad is None  # the teacher's classifier stays frozen


@pytest.mark.parametrize("kind", ["arcface", "cosface"])
def test_margin_variants_by_hand(kind):
    torch.manual_seed(1)
    w, e, y, m, s = torch.randn(3, 4), torch.randn(2, 4), torch.tensor([2, 0]), 0.3, 10.0
    loss = proxyless_kd_loss(e, w, y, kind=kind, margin=m, scale=s)
    total = 0.0
    for i in range(2):
        cos = [float(torch.dot(e[i], w[j]) / (e[i].norm() * w[j].norm())) for j in range(3)]
        tgt = math.cos(math.acos(cos[y[i]]) + m) if kind == "arcface" else cos[y[i]] - m
        z = [s * (tgt if j == y[i] else cos[j]) for j in range(3)]
        total += -(z[y[i]] - math.log(sum(math.exp(v) for v in z)))
    assert loss.item() == pytest.approx(total / 2, rel=1e-5)


def test_proxyless_shape_errors():
    with pytest.raises(DistillError, match="num_features"):
        proxyless_kd_loss(torch.randn(2, 3), torch.randn(5, 4), torch.tensor([0, 1]))
    with pytest.raises(DistillError, match="kind"):
        proxyless_kd_loss(torch.randn(2, 4), torch.randn(5, 4), torch.tensor([0, 1]), kind="sphere")
