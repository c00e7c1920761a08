import numpy as np
import pytest
import torch

from slimkit.data import create_dataset, make_loaders, stratified_split, with_index
from slimkit.errors import ConfigError


def test_digits_splits_are_deterministic_and_disjoint():
    a, b = create_dataset("digits", seed=3), create_dataset("digits", seed=3)
    c = create_dataset("digits", seed=4)
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)
    assert torch.equal(a.test.images, c.test.images)  # the test split never depends on the seed
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.info.num_classes == 10 and a.info.in_chans == 1 and a.info.image_size == (8, 8)


def test_stratified_split_keeps_class_proportions():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    keep, held = stratified_split(labels, 0.1, 0)
    assert np.bincount(labels[held]).tolist() == [1, 2, 3, 4]
    assert len(np.intersect1d(keep, held)) == 0 and len(keep) + len(held) == 100


def test_normalisation_matches_numpy_on_train_split():
    s = create_dataset("digits", augment=False)
    imgs = s.train.images.numpy().astype(np.float64) / 255.0
    assert s.info.mean[0] == pytest.approx(imgs.mean(), rel=1e-5)
    assert s.info.std[0] == pytest.approx(imgs.std(ddof=1), rel=1e-4)
    x = torch.stack([s.train[i][0] for i in range(len(s.train))])
    assert x.mean().item() == pytest.approx(0.0, abs=1e-4) and x.std().item() == pytest.approx(1.0, abs=1e-3)


def test_augmentation_is_a_function_of_seed_epoch_index():
    s = create_dataset("digits", flip=True)
    ds = s.train
    ds.set_epoch(0)
    a = [ds[i][0] for i in range(20)]
    assert all(torch.equal(x, ds[i][0]) for i, x in enumerate(a))
    ds.set_epoch(1)
    b = [ds[i][0] for i in range(20)]
    assert any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))
    ds.set_epoch(0)
    assert all(torch.equal(x, ds[i][0]) for i, x in enumerate(a))
    assert not s.val.augment and not s.test.augment


def test_limit_is_class_balanced_and_loaders_batch():
    s = create_dataset("digits", limit=100, val_fraction=0.2)
    labels = torch.cat([s.train.labels, s.val.labels])
    assert len(labels) == 100 and torch.bincount(labels).tolist() == [10] * 10
    ld = make_loaders(s, batch_size=16, seed=1)
    x, y = next(iter(ld.train))
    assert x.shape == (16, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    first = [torch.equal(next(iter(make_loaders(s, 16, seed=1).train))[1], y) for _ in range(2)]
    assert all(first)
    xi, yi, idx = with_index(s.train)[5]
    assert torch.equal(xi, s.train[5][0]) and idx == 5


def test_bad_val_fraction():
    with pytest.raises(ConfigError, match="val_fraction"):
        create_dataset("digits", val_fraction=1.5)


def test_limit_leaves_spare_images_never_trained_on(tmp_path):
    """Images left out by `limit` become `spare` (extra held-out images): none of them is a train or validation
    image, they are class-balanced and in a random order; without `limit` there are none."""
    from slimkit.data.datasets import SPARE_IMAGES

    n = 900
    x = np.zeros((n, 8, 8), np.uint8)
    x[:, 0, 0], x[:, 0, 1] = np.arange(n) % 256, np.arange(n) // 256  # every image names its index
    y = np.arange(n) % 3
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:30], y_test=y[:30])

    def ids(ds):
        raw = ds.images.reshape(len(ds), -1)[:, :2].long()
        return (raw[:, 0] + 256 * raw[:, 1]).tolist()

    s = create_dataset(str(tmp_path / "d.npz"), limit=150, val_fraction=0.2, augment=False)
    used, spare = set(ids(s.train)) | set(ids(s.val)), ids(s.spare)
    assert len(used) == 150 and len(spare) == n - 150 <= SPARE_IMAGES
    assert not used & set(spare) and set(spare) | used == set(range(n))
    assert torch.bincount(s.spare.labels).tolist() == [250] * 3
    assert spare != sorted(spare)  # a random order: the first k are a random sample
    assert create_dataset(str(tmp_path / "d.npz"), val_fraction=0.2).spare is None
