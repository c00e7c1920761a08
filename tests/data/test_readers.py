import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from slimkit.data import create_dataset, list_datasets, read_idx, write_idx
from slimkit.errors import CorruptDataError, DataError, DataNotFoundError, UnknownNameError

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def _mnist_dir(tmp_path, n_train=40, n_test=20, size=6):
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("t10k", n_test)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, size, size), dtype=np.uint8))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % 4).astype(np.uint8))
    return tmp_path


def test_idx_round_trip_gzip_and_raw(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.gz", "a.idx"):
        np.testing.assert_array_equal(read_idx(write_idx(tmp_path / name, a)), a)
    raw = (tmp_path / "a.idx").read_bytes()
    assert raw[:4] == bytes([0, 0, 8, 3]) and int.from_bytes(raw[4:8], "big") == 2


def test_idx_corruptions_are_named(tmp_path):
    good = write_idx(tmp_path / "g.idx", np.zeros((3, 4, 4), np.uint8)).read_bytes()
    (tmp_path / "trunc.idx").write_bytes(good[:-5])
    with pytest.raises(CorruptDataError, match="trunc.idx.*truncated"):
        read_idx(tmp_path / "trunc.idx")
    (tmp_path / "magic.idx").write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(CorruptDataError, match="magic number"):
        read_idx(tmp_path / "magic.idx")
    (tmp_path / "bad.gz").write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(CorruptDataError, match="gzip"):
        read_idx(tmp_path / "bad.gz")


def test_mnist_format_dir_and_mismatch(tmp_path):
    root = _mnist_dir(tmp_path)
    s = create_dataset("mnist", root, val_fraction=0.25)
    assert s.info.num_classes == 4 and s.info.in_chans == 1 and s.info.image_size == (6, 6)
    assert len(s.train) + len(s.val) == 40 and len(s.test) == 20
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(19, np.uint8))
    with pytest.raises(CorruptDataError, match="20 images but 19 labels"):
        create_dataset("mnist", root)


def test_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(DataNotFoundError) as e:
        create_dataset("fashion-mnist", tmp_path / "nowhere")
    assert "nowhere" in str(e.value) and "apt-get install -y dataset-fashion-mnist" in str(e.value)
    with pytest.raises(DataNotFoundError, match="--data-root"):
        create_dataset("cifar10")


def test_unknown_name_lists_known():
    with pytest.raises(UnknownNameError, match="fashion-mnist"):
        create_dataset("fashion_mnst")
    assert {"digits", "fashion-mnist", "cifar10", "npz", "folder"} <= set(list_datasets())


def test_npz_nhwc_float_and_bad_keys(tmp_path):
    x = np.random.default_rng(0).random((30, 5, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", images=x, labels=np.arange(30) % 3)
    s = create_dataset(str(tmp_path / "d.npz"), val_fraction=0.0)
    assert s.info.in_chans == 3 and s.info.image_size == (5, 5) and s.info.num_classes == 3
    np.savez(tmp_path / "bad.npz", foo=x)
    with pytest.raises(CorruptDataError, match="keys found: \\['foo'\\]"):
        create_dataset("npz", tmp_path / "bad.npz")


def test_npz_values_outside_pixel_range_are_refused_not_clipped(tmp_path):
    """Normalised (negative) or 16-bit values would be clipped to black / white images, silently."""
    x = np.random.default_rng(0).random((12, 1, 4, 4))
    y = np.arange(12) % 3
    for name, bad, shown in (("normalised", (x - 0.5) / 0.25, "-1.9"), ("deep", (x * 60000).astype(np.uint16), "to 5")):
        np.savez(tmp_path / f"{name}.npz", x=bad, y=y)
        with pytest.raises(CorruptDataError, match=f"values run from .*{shown}.*0..255 \\(or 0..1 floats\\)"):
            create_dataset("npz", tmp_path / f"{name}.npz")
    np.savez(tmp_path / "ok.npz", x=(x * 255).astype(np.int16), y=y)  # other integer types in 0..255 still read
    from slimkit.registry import DATASETS

    assert np.array_equal(DATASETS.create("npz", root=tmp_path / "ok.npz").x_train, (x * 255).astype(np.uint8))


def test_a_test_class_the_train_split_lacks_is_refused(tmp_path):
    from PIL import Image

    for split, classes in (("train", ("a", "b")), ("test", ("a", "b", "zzz"))):
        for c in classes:
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / split / c / "0.png")
    with pytest.raises(DataError, match="has class folder.*train has not: zzz"):
        create_dataset("folder", tmp_path)


def test_image_folder(tmp_path):
    from PIL import Image

    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for i in range(5):
            Image.fromarray(np.full((7, 9, 3), 40 * i, np.uint8)).save(tmp_path / c / f"{i}.png")
    s = create_dataset(str(tmp_path), val_fraction=0.0)
    assert s.info.class_names == ("cat", "dog") and s.info.image_size == (7, 9) and s.info.in_chans == 3
    assert len(s.train) + len(s.test) == 10
    (tmp_path / "one").mkdir()
    (tmp_path / "one" / "only").mkdir()
    with pytest.raises(DataError, match="class subfolder"):
        create_dataset("folder", tmp_path / "one")
    (tmp_path / "dog" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(CorruptDataError, match="broken.png"):
        create_dataset("folder", tmp_path)


def _cifar_batch(path, n, seed):
    rng = np.random.default_rng(seed)
    d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
    path.write_bytes(pickle.dumps(d))


def test_cifar10_tiny_batches(tmp_path):
    for i in (1, 2):
        _cifar_batch(tmp_path / f"data_batch_{i}", 10, i)
    _cifar_batch(tmp_path / "test_batch", 6, 9)
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    s = create_dataset("cifar10", tmp_path, val_fraction=0.0, augment=False)
    assert len(s.train) == 20 and len(s.test) == 6 and s.info.image_size == (32, 32)
    assert s.info.class_names[3] == "c3"
    raw = pickle.loads((tmp_path / "test_batch").read_bytes())[b"data"][0].reshape(3, 32, 32)
    x, _ = s.test[0]
    back = x * torch.tensor(s.info.std).view(3, 1, 1) + torch.tensor(s.info.mean).view(3, 1, 1)
    np.testing.assert_allclose((back * 255).round().numpy(), raw, atol=0.01)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_malicious_pickle_is_refused(tmp_path):
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(CorruptDataError, match="refusing to load builtins.print"):
        create_dataset("cifar10", tmp_path)


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    s = create_dataset("fashion-mnist", val_fraction=0.1)
    assert (len(s.train), len(s.val), len(s.test)) == (54000, 6000, 10000)
    assert s.info.num_classes == 10 and s.info.image_size == (28, 28)
    assert np.bincount(s.test.labels.numpy()).tolist() == [1000] * 10
