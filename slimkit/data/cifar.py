"""CIFAR-10/100 "python version" batch files, read with a restricted unpickler (no arbitrary code)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from slimkit.errors import CorruptDataError, DataNotFoundError

__all__ = ["read_cifar"]

# The batch files are dicts of bytes/str keys -> lists, bytes and numpy arrays. Nothing else may be built.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR batches contain only arrays")


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise DataNotFoundError(
            f"CIFAR batch file {str(path)!r} not found. Point --data-root / root= at the extracted "
            "'cifar-10-batches-py' or 'cifar-100-python' folder"
        )
    try:
        obj = _SafeUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupt file to the user
        raise CorruptDataError(f"{path}: not a valid CIFAR python batch ({e})") from None
    if not isinstance(obj, dict):
        raise CorruptDataError(f"{path}: expected a dict, found {type(obj).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _images_labels(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = _load(path)
    if "data" not in d or label_key not in d:
        raise CorruptDataError(f"{path}: missing 'data' or {label_key!r} (keys: {sorted(d)})")
    x = np.asarray(d["data"], dtype=np.uint8)
    y = np.asarray(d[label_key], dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != 3072:
        raise CorruptDataError(f"{path}: 'data' must be N x 3072 uint8, got {x.shape}")
    if len(x) != len(y):
        raise CorruptDataError(f"{path}: {len(x)} images but {len(y)} labels")
    return x.reshape(-1, 3, 32, 32), y


def _names(path: Path, key: str) -> list[str] | None:
    if not path.is_file():
        return None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in _load(path).get(key, [])] or None


def read_cifar(root: str | Path, classes: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list]:
    """(x_train NCHW uint8, y_train, x_test, y_test, class names) from a CIFAR-10 or CIFAR-100 python folder."""
    root = Path(root)
    if classes == 10:
        files = [root / f"data_batch_{i}" for i in range(1, 6)]
        parts = [_images_labels(f, "labels") for f in files if f.exists()]
        if not parts:
            raise DataNotFoundError(f"no data_batch_1..5 in {str(root)!r}: extract cifar-10-python.tar.gz there")
        xtr, ytr = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        xte, yte = _images_labels(root / "test_batch", "labels")
        names = _names(root / "batches.meta", "label_names")
    else:
        xtr, ytr = _images_labels(root / "train", "fine_labels")
        xte, yte = _images_labels(root / "test", "fine_labels")
        names = _names(root / "meta", "fine_label_names")
    n = int(max(ytr.max(), yte.max())) + 1
    if n > classes:
        raise CorruptDataError(f"{root}: labels go up to {n - 1}, more than CIFAR-{classes} has")
    return xtr, ytr, xte, yte, names or [str(i) for i in range(classes)]
