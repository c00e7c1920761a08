"""Bad labels and images are refused when the data is read (before any run folder or training), never truncated,
zeroed or turned into extra classes."""

import numpy as np
import pytest

from slimkit.data import create_dataset, write_idx
from slimkit.errors import CorruptDataError
from slimkit.jobs import train
from slimkit.train import TrainConfig


def _mnist_dir(tmp_path, labels_train):
    rng = np.random.default_rng(0)
    for split, y in (("train", labels_train), ("t10k", np.arange(12) % 4)):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (len(y), 6, 6), dtype=np.uint8))
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", np.asarray(y, dtype=np.uint8))
    return tmp_path


def test_an_idx_label_of_200_is_not_a_201_class_dataset(tmp_path):
    y = np.arange(40) % 4
    assert create_dataset("mnist", _mnist_dir(tmp_path, y)).info.num_classes == 4
    y[7] = 200
    with pytest.raises(CorruptDataError, match="largest label is 200.*0..K-1"):
        create_dataset("mnist", _mnist_dir(tmp_path, y))


def _npz(tmp_path, x=None, y=None):
    x = np.random.default_rng(0).random((30, 6, 6)).astype(np.float32) if x is None else x
    y = np.arange(30) % 3 if y is None else y
    np.savez(tmp_path / "d.npz", x=x, y=y)
    return str(tmp_path / "d.npz")


@pytest.mark.parametrize("labels, match", [
    (np.r_[np.arange(29) % 3, -1], "label -1 .sample 29. is negative"),
    (np.r_[np.arange(29) % 3, 1.5], "label 1.5 .sample 29. is not a class id"),
    (np.r_[np.arange(29) % 3, np.nan], "is not a class id"),
    (np.array(["a"] * 30), "integer class ids"),
])
def test_npz_labels_are_class_ids(tmp_path, labels, match):
    with pytest.raises(CorruptDataError, match=match):
        create_dataset(_npz(tmp_path, y=labels))


def test_whole_float_labels_are_fine(tmp_path):
    assert create_dataset(_npz(tmp_path, y=(np.arange(30) % 3).astype(np.float64))).info.num_classes == 3


def test_nan_images_are_refused_not_zeroed(tmp_path):
    x = np.random.default_rng(0).random((30, 6, 6)).astype(np.float32)
    x[3, 2, 2] = np.nan
    with pytest.raises(CorruptDataError, match="1 image values are NaN"):
        create_dataset(_npz(tmp_path, x=x))


@pytest.mark.parametrize("content", [b"not an archive at all" * 10, b"\x93NUMPY garbage"])
def test_a_garbage_npz_is_named_without_numpys_pickle_hint(tmp_path, content):
    (tmp_path / "g.npz").write_bytes(content)
    with pytest.raises(CorruptDataError, match="not a readable .npz") as e:
        create_dataset(str(tmp_path / "g.npz"))
    assert "allow_pickle" not in str(e.value)


def test_bad_labels_fail_before_the_run_folder_is_written(tmp_path):
    path = _npz(tmp_path, y=np.r_[np.arange(29) % 3, -4])
    with pytest.raises(CorruptDataError):
        train.run(train.TrainJobConfig(model="convnet_tiny", data=path, out=str(tmp_path / "run"),
                                       train=TrainConfig(epochs=1, progress=False)))
    assert not (tmp_path / "run").exists()
