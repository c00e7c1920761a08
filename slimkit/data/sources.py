"""Raw sources: each returns a `RawData` of uint8 NCHW images and int64 labels, train and test.

The dataset builders registered in `slimkit.registry.DATASETS` live here; `create_dataset` turns raw data into
normalised, split, optionally augmented datasets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slimkit.data.cifar import read_cifar
from slimkit.data.files import ImageFiles, scan_images
from slimkit.data.idx import read_idx
from slimkit.errors import CorruptDataError, DataError, DataNotFoundError
from slimkit.registry import DATASETS

__all__ = ["RawData", "FASHION_MNIST_DIRS", "IMAGE_EXTENSIONS"]

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


@dataclass(frozen=True)
class RawData:
    """Images as uint8 N x C x H x W arrays (or lazily decoded `ImageFiles`); `test` may be None (then split off the
    train set)."""

    name: str
    x_train: np.ndarray | ImageFiles
    y_train: np.ndarray
    x_test: np.ndarray | ImageFiles | None
    y_test: np.ndarray | None
    class_names: list[str]
    flip: bool  # is a horizontal flip label-preserving for this data?


def _check_pair(x: np.ndarray, y: np.ndarray, where: str) -> None:
    if len(x) != len(y):
        raise CorruptDataError(f"{where}: {len(x)} images but {len(y)} labels; the files do not belong together")
    if len(x) == 0:
        raise CorruptDataError(f"{where}: no samples")


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    """Class ids as int64: whole numbers >= 0. Float labels that are not whole numbers and negative labels are
    refused (never truncated, never left to fail at training time)."""
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(y) | (y != np.round(y)))
        if len(bad):
            raise CorruptDataError(f"{where}: label {float(y[bad[0]])!r} (sample {bad[0]}) is not a class id; "
                                   "labels are whole numbers 0..K-1 (float labels are not truncated)")
    elif y.dtype.kind not in "iub":
        raise CorruptDataError(f"{where}: labels must be integer class ids 0..K-1, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        i = int(np.argmin(y))
        raise CorruptDataError(f"{where}: label {int(y[i])} (sample {i}) is negative; class ids are 0..K-1")
    return y


def class_ids(where: str, *labels: np.ndarray | None) -> list[str]:
    """Names "0".."K-1" for labels given as ids, checking that every id below the largest occurs: a label of 200
    among ten classes is a broken file, not a 201-class dataset."""
    present = np.unique(np.concatenate([y for y in labels if y is not None]))
    n = int(present.max()) + 1
    missing = np.setdiff1d(np.arange(n), present)
    if len(missing):
        raise CorruptDataError(f"{where}: the largest label is {n - 1} but {len(missing)} of the ids 0..{n - 1} never "
                               f"occur (e.g. {missing[:5].tolist()}); class ids must be 0..K-1 with every class "
                               "present: fix the wrong labels or renumber the classes")
    return [str(i) for i in range(n)]


def _find_idx(root: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    raise DataNotFoundError(f"{stem}[.gz] not found in {str(root)!r}")


def _read_idx_dir(root: Path, name: str) -> tuple[np.ndarray, ...]:
    out = []
    for split in ("train", "t10k"):
        xp, yp = _find_idx(root, f"{split}-images-idx3-ubyte"), _find_idx(root, f"{split}-labels-idx1-ubyte")
        x, y = read_idx(xp), _labels(read_idx(yp), str(yp))
        if x.ndim != 3 or y.ndim != 1:
            raise CorruptDataError(f"{xp}: expected N x H x W images and N labels, got {x.shape} and {y.shape}")
        _check_pair(x, y, f"{name} {split} ({xp.name}, {yp.name})")
        out += [x[:, None].astype(np.uint8), y]
    return tuple(out)


def _fashion_roots(root: str | Path | None) -> list[Path]:
    if root is not None:
        return [Path(root)]
    env = os.environ.get("SLIMKIT_DATA")
    cands = [Path(env) / "fashion-mnist", Path(env)] if env else []
    return cands + [Path(d) for d in FASHION_MNIST_DIRS]


@DATASETS.register("fashion-mnist")
def fashion_mnist(root: str | Path | None = None) -> RawData:
    """Fashion-MNIST (70,000 28x28 grey images, 10 classes) from IDX files."""
    looked = _fashion_roots(root)
    for r in looked:
        try:
            xtr, ytr, xte, yte = _read_idx_dir(r, "fashion-mnist")
        except DataNotFoundError:
            continue
        return RawData("fashion-mnist", xtr, ytr, xte, yte, list(FASHION_CLASSES), flip=True)
    raise DataNotFoundError(
        f"Fashion-MNIST IDX files not found (looked in {', '.join(map(str, looked))}). Install them with "
        "`apt-get install -y dataset-fashion-mnist`, or pass --data-root DIR (root=) pointing at a folder with "
        "train-images-idx3-ubyte.gz and friends, or set $SLIMKIT_DATA"
    )


@DATASETS.register("mnist")
def mnist(root: str | Path | None = None) -> RawData:
    """Any MNIST-format IDX folder (train-/t10k- images and labels)."""
    if root is None:
        raise DataNotFoundError("dataset 'mnist' needs --data-root DIR (root=) with the four MNIST IDX files")
    try:
        xtr, ytr, xte, yte = _read_idx_dir(Path(root), "mnist")
    except DataNotFoundError as e:
        raise DataNotFoundError(f"{e}: point --data-root at a folder with the four MNIST-format IDX files") from None
    return RawData("mnist", xtr, ytr, xte, yte, class_ids(str(root), ytr, yte), flip=False)


@DATASETS.register("digits")
def digits(root: str | Path | None = None) -> RawData:
    """scikit-learn's 1,797 8x8 handwritten digits (always available; no test split, one is carved out)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return RawData("digits", x, d.target.astype(np.int64), None, None, [str(i) for i in range(10)], flip=False)


def _cifar(root: str | Path | None, classes: int) -> RawData:
    folder = "cifar-10-batches-py" if classes == 10 else "cifar-100-python"
    if root is None:
        raise DataNotFoundError(f"dataset 'cifar{classes}' needs --data-root DIR (root=) = the extracted {folder}")
    xtr, ytr, xte, yte, names = read_cifar(root, classes)
    return RawData(f"cifar{classes}", xtr, ytr, xte, yte, names, flip=True)


@DATASETS.register("cifar10")
def cifar10(root: str | Path | None = None) -> RawData:
    """CIFAR-10 python batches provided by the user (root = the cifar-10-batches-py folder)."""
    return _cifar(root, 10)


@DATASETS.register("cifar100")
def cifar100(root: str | Path | None = None) -> RawData:
    """CIFAR-100 python files provided by the user (root = the cifar-100-python folder)."""
    return _cifar(root, 100)


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise CorruptDataError(f"{where}: images must be N x H x W, N x H x W x C or N x C x H x W, got {x.shape}")
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).sum())
        raise CorruptDataError(f"{where}: {bad} image values are NaN or infinite; images must hold finite pixel "
                               "values (0..255, or 0..1 floats)")
    if x.dtype.kind not in "uifb":
        raise CorruptDataError(f"{where}: images must be numeric arrays, got dtype {x.dtype}")
    if x.dtype != np.uint8:
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
        if lo < 0 or hi > 255:  # never clipped: normalised or 16-bit images would silently turn black / white
            raise CorruptDataError(f"{where}: image values run from {lo:g} to {hi:g}, but images hold pixel values "
                                   "0..255 (or 0..1 floats): store the images before normalisation, and scale other "
                                   "ranges first (16-bit: x / 257)")
        x = np.round(x * (255.0 if hi <= 1.0 else 1.0)).astype(np.uint8)
    return np.ascontiguousarray(x)


@DATASETS.register("npz")
def npz(root: str | Path | None = None) -> RawData:
    """A .npz with x/y (or images/labels, x_train/y_train [+ x_test/y_test]) arrays, NHWC or NCHW."""
    if root is None or not Path(root).is_file():
        raise DataNotFoundError(f"npz file {str(root)!r} not found: pass the file as --data-root (root=)")
    try:
        f = np.load(root, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:  # pickles are never loaded: a non-.npz file lands here
        raise CorruptDataError(f"{root} is not a readable .npz archive of arrays ({type(e).__name__}); save one "
                               "with numpy.savez(path, x=images, y=labels)") from None
    if not hasattr(f, "files"):
        raise CorruptDataError(f"{root} holds a single array, not a .npz archive: save images and labels with "
                               "numpy.savez(path, x=images, y=labels)")
    try:
        with f:
            keys = set(f.files)
            for xk, yk in (("x_train", "y_train"), ("x", "y"), ("images", "labels"), ("X", "y")):
                if {xk, yk} <= keys:
                    x, y = f[xk], f[yk]
                    break
            else:
                raise CorruptDataError(
                    f"{root}: cannot tell images from labels (keys found: {sorted(keys)}); name them x and y, "
                    "images and labels, or x_train/y_train[/x_test/y_test]"
                )
            xt, yt = (f["x_test"], f["y_test"]) if {"x_test", "y_test"} <= keys else (None, None)
    except (ValueError, OSError, EOFError) as e:  # an object array (pickle) or a damaged member
        raise CorruptDataError(f"{root}: cannot read its arrays ({e}); store plain numeric arrays, e.g. "
                               "numpy.savez(path, x=images, y=labels)") from None
    x, y = _to_nchw(x, str(root)), _labels(y, str(root))
    _check_pair(x, y, str(root))
    if xt is not None:
        xt, yt = _to_nchw(xt, f"{root} (test)"), _labels(yt, f"{root} (test)")
        _check_pair(xt, yt, f"{root} (test)")
    return RawData(Path(root).stem, x, y, xt, yt, class_ids(str(root), y, yt), flip=False)


@DATASETS.register("folder")
def folder(root: str | Path | None = None, image_size: int | None = None) -> RawData:
    """Class-per-subfolder images, decoded lazily (`ImageFiles`); `train/` and `test/` subfolders are used when
    present. Every file's header is opened here, so a file that is not an image fails before training."""
    if root is None or not Path(root).is_dir():
        raise DataNotFoundError(f"image folder {str(root)!r} not found: pass it as --data-root (root=)")
    root = Path(root)
    splits = [root / "train", root / "test"] if (root / "train").is_dir() else [root]
    names = _class_names(splits[0])
    if len(splits) == 2 and splits[1].is_dir():
        extra = sorted(p.name for p in splits[1].iterdir() if p.is_dir() and p.name not in names)
        if extra:  # its images would be left out of the test set without a word
            raise DataError(f"{splits[1]} has class folder(s) that {splits[0]} has not: {', '.join(extra[:5])}; "
                            "train/ and test/ must name the same classes (rename or remove them)")
    listed = [_list_folder(d, names) for d in splits if d.is_dir()]
    sizes, grey = scan_images([p for paths, _ in listed for p in paths])
    mode, start, out = "L" if grey else "RGB", 0, []
    for paths, labels in listed:
        hw = np.asarray(sizes[start:start + len(paths)], dtype=np.int64).reshape(-1, 2)
        start += len(paths)
        fixed = (int(image_size), int(image_size)) if image_size else None
        out += [ImageFiles(np.asarray([str(p) for p in paths]), hw, mode, fixed), labels]
    xtr, ytr, xte, yte = out if len(out) == 4 else (*out, None, None)
    return RawData(root.name, xtr, ytr, xte, yte, names, flip=True)


def _class_names(root: Path) -> list[str]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise DataError(f"{root}: found {len(classes)} class subfolder(s); an image folder needs one per class (>= 2)")
    return classes


def _list_folder(root: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    paths, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (root / cls).glob("*") if p.suffix.lower() in IMAGE_EXTENSIONS) \
            if (root / cls).is_dir() else []
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"{root}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the class subfolders")
    return paths, np.asarray(labels, dtype=np.int64)
