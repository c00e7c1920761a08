import copy
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from slimkit.data import ImageDataset, with_index
from slimkit.distill import kd_loss
from slimkit.distill.store import LogitStore, write_logit_store
from slimkit.distill.stored_kd import StoredKDLoss, sparse_kd_loss, sparse_soft_target
from slimkit.errors import CorruptDataError, DataNotFoundError, DistillError
from slimkit.train import Callback, TrainConfig, Trainer

N, C, K = 20, 10, 3


def _dataset(seed: int = 3) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, 8, 8), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, C, (N,), generator=g)
    return ImageDataset(images, labels, torch.tensor([0.5]), torch.tensor([0.25]), augment=True, pad=1, flip=True,
                        seed=seed)


class Counting(nn.Module):
    """A tiny teacher that counts its forward calls and can fail on the `fail_at`-th one (a simulated crash)."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, C))
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated crash")
        return self.net(x)


def _write(tmp_path, teacher=None, **kw):
    teacher = teacher or Counting()
    kw = {"epochs": 2, "k": K, "batch_size": 4, "shard_size": 7, "progress": False, **kw}
    return write_logit_store(teacher, _dataset(), tmp_path / "store", **kw), teacher


def test_round_trip_and_augmentation_replay(tmp_path):
    store, teacher = _write(tmp_path)
    ds = _dataset()
    order = torch.randperm(N, generator=torch.Generator().manual_seed(5))  # gather across shards, any order
    stored = {e: store.lookup(e, order) for e in range(2)}
    for e in range(2):
        ds.set_epoch(e)
        with torch.no_grad():
            ref = torch.softmax(teacher.net(torch.stack([ds[int(i)][0] for i in order])), 1).topk(K, 1)
        values, classes = stored[e]
        assert torch.equal(classes, ref.indices)
        torch.testing.assert_close(values, ref.values.half().float(), atol=1e-3, rtol=0)
    # the replay matters: epochs differ, and the un-augmented images give other targets
    assert (stored[0][0] - stored[1][0]).abs().amax(1).gt(1e-3).sum() >= N // 2
    plain = ImageDataset(ds.images, ds.labels, torch.tensor([0.5]), torch.tensor([0.25]))
    with torch.no_grad():
        p = torch.softmax(teacher.net(torch.stack([plain[int(i)][0] for i in order])), 1).topk(K, 1).values
    assert (p - stored[0][0]).abs().max() > 1e-2
    assert np.load(tmp_path / "store" / "e0001_000000014.values.npy").dtype == np.float16
    assert np.load(tmp_path / "store" / "e0001_000000014.indices.npy").dtype == np.int16
    m = json.loads((tmp_path / "store" / "manifest.json").read_text())
    assert (m["k"], m["num_classes"], m["epochs"], len(m["shards"])) == (K, C, 2, 6)


def _live_reference(student, teacher, x, y, k, T, alpha):
    """Loop reference: the live teacher's softmax, kept on its top-k, the rest of the mass spread evenly."""
    p = torch.softmax(teacher(x), 1)
    s = student(x)
    terms = []
    for n in range(len(x)):
        top = set(p[n].argsort(descending=True)[:k].tolist())
        tail = (1 - sum(p[n, c] for c in top)) / (C - k)
        q = torch.stack([p[n, c] if c in top else tail for c in range(C)]) ** (1 / T)
        q = q / q.sum()
        terms.append((q * (q.log() - torch.log_softmax(s[n] / T, 0))).sum())
    loss = torch.stack(terms).mean() * T * T
    return alpha * loss + (1 - alpha) * nn.functional.cross_entropy(s, y)


@pytest.mark.parametrize("T, alpha", [(1.0, 1.0), (2.0, 1.0), (4.0, 0.7)])
def test_step_from_store_equals_step_with_live_teacher(tmp_path, T, alpha):
    store, teacher = _write(tmp_path)
    ds = with_index(_dataset())
    ds.set_epoch(1)
    x, y, idx = next(iter(DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))))
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, C))
    loss_fn = StoredKDLoss(store, temperature=T, alpha=alpha)
    loss_fn.on_epoch_start(None, 1)
    ours, logits = loss_fn(student, (x, y, idx))
    ref = _live_reference(student, teacher.net, x, y, K, T, alpha)
    torch.testing.assert_close(ours, ref, rtol=2e-3, atol=1e-5)
    g_ours = torch.autograd.grad(ours, list(student.parameters()))
    g_ref = torch.autograd.grad(ref, list(student.parameters()))
    bound = 2.5e-4 * T * float(x.abs().max())  # fp16 keeps q to 2^-12 relative; dL/dW = T (softmax - q_T) x / N
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=bound)
        assert (a - b).abs().max() < 0.05 * b.abs().max()
    assert logits.shape == (8, C)


def test_trainer_from_store_equals_trainer_with_live_teacher(tmp_path):
    store, teacher = _write(tmp_path)
    cfg = TrainConfig(epochs=2, batch_size=8, lr=0.1, progress=False)
    torch.manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(64, C))
    runs = []
    for stored in (True, False):
        model = copy.deepcopy(student)
        loader = DataLoader(with_index(_dataset()), batch_size=8, shuffle=True)
        if stored:
            loss = StoredKDLoss(store, temperature=2.0)
            Trainer(model, cfg, loader, loss_fn=loss, callbacks=[loss]).fit()
        else:
            def live(m, b):
                return _live_reference(m, teacher.net, b[0], b[1], K, 2.0, 1.0), m(b[0])
            Trainer(model, cfg, loader, loss_fn=live).fit()
        runs.append(model[1].weight.detach())
    assert (runs[0] - student[1].weight).abs().max() > 1e-3  # it trained
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=2e-4)


def test_corrupt_or_truncated_shard_names_the_shard(tmp_path):
    _write(tmp_path)
    root = tmp_path / "store"
    f = root / "e0000_000000007.values.npy"
    raw = bytearray(f.read_bytes())
    raw[-3] ^= 0xFF
    f.write_bytes(bytes(raw))
    store = LogitStore(root)
    store.lookup(0, [0, 6, 14])  # other shards are fine
    with pytest.raises(CorruptDataError, match=r"e0000_000000007.*sha256.*rerun `slimkit distill store-logits`"):
        store.lookup(0, [8])
    g = root / "e0001_000000000.indices.npy"
    g.write_bytes(g.read_bytes()[:-5])
    with pytest.raises(CorruptDataError, match=r"e0001_000000000.*bytes"):
        LogitStore(root, verify=False).lookup(1, [3])
    g.unlink()
    with pytest.raises(DataNotFoundError, match="e0001_000000000"):
        LogitStore(root).lookup(1, [3])


def test_manifest_version_and_missing_store(tmp_path):
    _write(tmp_path)
    path = tmp_path / "store" / "manifest.json"
    m = json.loads(path.read_text())
    path.write_text(json.dumps({**m, "version": 99}))
    with pytest.raises(DistillError, match="version 99"):
        LogitStore(tmp_path / "store")
    path.write_text("{not json")
    with pytest.raises(CorruptDataError, match="manifest"):
        LogitStore(tmp_path / "store")
    with pytest.raises(DataNotFoundError, match="write_logit_store"):
        LogitStore(tmp_path / "nowhere")


def test_resume_skips_complete_shards_and_redoes_corrupt_ones(tmp_path):
    crashing = Counting(fail_at=4)  # shards of 7, 7, 6 images at batch 4: two calls each; dies inside shard 2
    with pytest.raises(RuntimeError, match="simulated"):
        _write(tmp_path, crashing)
    again = Counting()
    store, _ = _write(tmp_path, again)
    assert again.calls == 2 * 5  # 6 shards, 1 complete
    assert not list((tmp_path / "store").glob("*.tmp"))
    third = Counting()
    _write(tmp_path, third)
    assert third.calls == 0
    f = tmp_path / "store" / "e0001_000000007.indices.npy"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0x01
    f.write_bytes(bytes(raw))
    fourth = Counting()
    _write(tmp_path, fourth)
    assert fourth.calls == 2
    fresh, _ = write_logit_store(Counting(), _dataset(), tmp_path / "fresh", 2, K, 4, shard_size=7,
                                 progress=False), None
    for e in range(2):
        a, b = LogitStore(tmp_path / "store").lookup(e, range(N)), fresh.lookup(e, range(N))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    more = Counting()  # asking for a third epoch extends the store by exactly that epoch
    assert _write(tmp_path, more, epochs=3)[0].epochs == 3 and more.calls == 6


def test_sparse_kd_reduces_to_kd_when_k_is_all_classes_and_target_is_tinyvits():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(4, C, generator=g, requires_grad=True), torch.randn(4, C, generator=g)
    v, i = torch.softmax(t, 1).topk(C, 1)
    for T in (1.0, 3.0):
        torch.testing.assert_close(sparse_kd_loss(s, v, i, T), kd_loss(s, t, temperature=T, alpha=1.0))
    v, i = torch.softmax(t, 1).topk(K, 1)
    q = sparse_soft_target(v, i, C)
    torch.testing.assert_close(q.sum(1), torch.ones(4))
    torch.testing.assert_close(q.gather(1, i), v)
    tail = torch.ones(4, C, dtype=torch.bool).scatter(1, i, False)
    torch.testing.assert_close(q[tail].view(4, C - K), ((1 - v.sum(1, keepdim=True)) / (C - K)).expand(4, C - K))
    assert sparse_kd_loss(q.log(), v, i).abs() < 1e-6  # zero at the target


def test_clear_errors(tmp_path):
    store, _ = _write(tmp_path)
    with pytest.raises(DistillError, match="epoch 2"):
        store.lookup(2, [0])
    with pytest.raises(DistillError, match="index 99"):
        store.lookup(0, [1, 99])
    with pytest.raises(DistillError, match="with_index"):
        StoredKDLoss(store)(nn.Linear(64, C), (torch.randn(2, 64), torch.tensor([0, 1])))
    with pytest.raises(DistillError, match="seed"):
        store.check_dataset(_dataset(seed=4))
    store.check_dataset(with_index(_dataset()))
    with pytest.raises(DistillError, match="k=3"):
        _write(tmp_path, k=4)
    with pytest.raises(DistillError, match="k=11"):
        _write(tmp_path / "other", k=11)
    with pytest.raises(DistillError, match="need N x C"):
        sparse_kd_loss(torch.randn(2, C), torch.rand(3, K), torch.zeros(3, K, dtype=torch.long))


def test_many_classes_use_int32_indices_and_plain_tensor_datasets_work(tmp_path):
    big = nn.Linear(4, 40_000)  # past int16's 32767
    ds = torch.utils.data.TensorDataset(torch.randn(3, 4), torch.zeros(3, dtype=torch.long))
    store = write_logit_store(big, ds, tmp_path / "big", epochs=1, k=2, progress=False)
    values, classes = store.lookup(0, [2, 0])
    with torch.no_grad():
        ref = torch.softmax(big(ds.tensors[0][[2, 0]]), 1).topk(2, 1)
    assert np.load(tmp_path / "big" / "e0000_000000000.indices.npy").dtype == np.int32
    assert torch.equal(classes, ref.indices) and classes.max() > 0
    torch.testing.assert_close(values, ref.values.half().float())


def test_a_corrupt_shard_of_the_last_epoch_stops_training_before_the_first_step(tmp_path):
    store, _ = _write(tmp_path)
    f = tmp_path / "store" / "e0001_000000014.values.npy"  # read only when training reaches epoch 2
    raw = bytearray(f.read_bytes())
    raw[-2] ^= 0xFF
    f.write_bytes(bytes(raw))
    steps = []

    class Count(Callback):
        def on_batch_end(self, trainer, step, loss):
            steps.append(step)
    loss = StoredKDLoss(LogitStore(tmp_path / "store"), temperature=2.0)
    loader = DataLoader(with_index(_dataset()), batch_size=8, shuffle=True)
    with pytest.raises(CorruptDataError, match="e0001_000000014.*slimkit distill store-logits"):
        Trainer(nn.Sequential(nn.Flatten(), nn.Linear(64, C)), TrainConfig(epochs=2, batch_size=8, progress=False),
                loader, loss_fn=loss, callbacks=[loss, Count()]).fit()
    assert steps == []
    with pytest.raises(DistillError, match="holds 2 epochs, training needs 3"):
        LogitStore(tmp_path / "store", verify=False).check(3)
