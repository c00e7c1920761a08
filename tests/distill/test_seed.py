"""SEED: the loss equals the cross-entropy of the two softmax distributions; the queue is FIFO; the trainer
adapter fills the queue; the linear probe agrees with scikit-learn on the same features."""

import numpy as np
import pytest
import torch

from slimkit.distill import EmbeddingQueue, SeedLoss, SeedStudent, linear_probe, seed_loss
from slimkit.errors import DistillError
from slimkit.models import create_model


def test_seed_loss_by_hand():
    torch.manual_seed(0)
    s = torch.randn(3, 4, requires_grad=True)
    t, q = torch.randn(3, 4), torch.randn(5, 4)
    ts, tt = 0.2, 0.07
    loss = seed_loss(s, t, q, ts, tt)
    total = 0.0
    for i in range(3):
        si, ti = s[i] / s[i].norm(), t[i] / t[i].norm()
        anchors = [ti] + [q[j] / q[j].norm() for j in range(5)]
        ps = torch.softmax(torch.stack([si @ a for a in anchors]) / ts, 0)
        pt = torch.softmax(torch.stack([ti @ a for a in anchors]) / tt, 0)
        total = total - (pt * ps.log()).sum()
    hand = total / 3
    torch.testing.assert_close(loss, hand)
    g1, = torch.autograd.grad(loss, s, retain_graph=True)
    g2, = torch.autograd.grad(hand, s)
    torch.testing.assert_close(g1, g2)


def test_empty_queue_and_errors():
    s, t = torch.randn(2, 4), torch.randn(2, 4)
    assert seed_loss(s, t, torch.empty(0, 4)).item() == pytest.approx(0.0, abs=1e-6)  # one anchor: p = 1 for both
    with pytest.raises(DistillError, match="projection head"):
        seed_loss(torch.randn(2, 3), t, torch.empty(0, 4))


def test_queue_is_fifo():
    q = EmbeddingQueue(size=5, dim=2)
    for k in range(4):  # 4 batches of 2: 8 rows, the last 5 stay, oldest first
        q.enqueue(torch.full((2, 2), float(k)) + torch.tensor([[0.0], [0.5]]))
    assert q.content()[:, 0].tolist() == [1.5, 2.0, 2.5, 3.0, 3.5] and len(q) == 5
    clone = EmbeddingQueue(1, 1)
    clone.load_state_dict(q.state_dict())
    assert torch.equal(clone.content(), q.content()) and clone.size == 5


def test_seed_trainer_adapter_fills_queue_and_learns():
    torch.manual_seed(0)
    teacher = create_model("convnet_small", in_chans=1)
    student = SeedStudent(create_model("convnet_tiny", in_chans=1), out_dim=teacher.num_features)
    loss_fn = SeedLoss(teacher, queue_size=16)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    x = torch.randn(8, 1, 12, 12)
    for _ in range(2):  # fill the queue: 2 batches of 8
        loss_fn(student, (x, None))
    assert len(loss_fn.queue) == 16
    queue, t = loss_fn.queue.content().clone(), loss_fn.teacher_embed(x)

    def fixed_loss():  # the SEED loss against a frozen snapshot of the queue
        student.eval()
        with torch.no_grad():
            return seed_loss(student(x), t, queue).item()

    before = fixed_loss()
    student.train()
    for _ in range(10):
        loss, _ = loss_fn(student, (x, None))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_loss() < before
    assert all(p.grad is None for p in teacher.parameters())


def test_linear_probe_equals_sklearn_on_same_features():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    torch.manual_seed(0)
    d = load_digits()
    x = torch.tensor(d.images[:, None] / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    net = create_model("convnet_tiny", in_chans=1).eval()  # random, frozen features
    tr = [(x[i:min(i + 256, 1400)], y[i:min(i + 256, 1400)]) for i in range(0, 1400, 256)]
    te = [(x[1400:], y[1400:])]
    acc = linear_probe(net, tr, te)
    with torch.no_grad():  # the same batches as the probe, so conv results are bit-identical
        f = torch.cat([net.forward_head(net.forward_features(b), pre_logits=True) for b, _ in tr + te]).numpy()
    ref = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(f[:1400], d.target[:1400])
    assert acc == pytest.approx(ref.score(f[1400:], d.target[1400:]))
    assert acc > 0.5  # far above chance (0.1) even with random conv features
    assert np.isfinite(acc)
