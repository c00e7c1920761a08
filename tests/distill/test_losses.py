import pytest
import torch

from slimkit.distill import kd_loss, kd_loss_fn
from slimkit.errors import DistillError


def _hand_kd(s, t, y, T, alpha):
    pt = torch.softmax(t / T, 1)
    ps = torch.softmax(s / T, 1)
    kl = (pt * (pt.log() - ps.log())).sum(1).mean() * T * T
    ce = -torch.log_softmax(s, 1)[torch.arange(len(y)), y].mean()
    return alpha * kl + (1 - alpha) * ce


@pytest.mark.parametrize("T, alpha", [(1.0, 0.5), (4.0, 0.9), (2.0, 1.0)])
def test_kd_matches_hand_computation_values_and_grads(T, alpha):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5, 7, generator=g, requires_grad=True)
    t = torch.randn(5, 7, generator=g)
    y = torch.randint(0, 7, (5,), generator=g)
    ours = kd_loss(s, t, y, temperature=T, alpha=alpha)
    ref = _hand_kd(s, t, y, T, alpha)
    torch.testing.assert_close(ours, ref)
    (g1,) = torch.autograd.grad(ours, s)
    (g2,) = torch.autograd.grad(_hand_kd(s, t, y, T, alpha), s)
    torch.testing.assert_close(g1, g2)


def test_kd_is_zero_when_student_equals_teacher_and_alpha_one():
    z = torch.randn(3, 4)
    assert kd_loss(z, z, None, alpha=1.0).abs().item() < 1e-6


def test_adapter_freezes_teacher_and_errors_are_clear():
    teacher = torch.nn.Linear(4, 3)
    student = torch.nn.Linear(4, 3)
    loss, logits = kd_loss_fn(teacher)(student, (torch.randn(2, 4), torch.tensor([0, 1])))
    loss.backward()
    assert teacher.weight.grad is None and student.weight.grad is not None and logits.shape == (2, 3)
    with pytest.raises(DistillError, match="same classes"):
        kd_loss(torch.randn(2, 3), torch.randn(2, 4))


def test_virtual_teacher_and_tfkd_match_hand_computation():
    from slimkit.distill import tfkd_loss, virtual_teacher

    y = torch.tensor([2, 0])
    v = virtual_teacher(y, 4, 0.7)
    torch.testing.assert_close(v, torch.tensor([[0.1, 0.1, 0.7, 0.1], [0.7, 0.1, 0.1, 0.1]]))
    s = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    T, a = 5.0, 0.3
    pt = torch.softmax(v.double() / T, 1)
    ps = torch.softmax(s / T, 1)
    ref = (1 - a) * torch.nn.functional.cross_entropy(s, y) + a * (pt * (pt.log() - ps.log())).sum(1).mean() * T * T
    ours = tfkd_loss(s, y, correct_prob=0.7, temperature=T, alpha=a)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, s)[0], torch.autograd.grad(ref, s)[0])
    with pytest.raises(DistillError):
        virtual_teacher(y, 1)
