"""From raw uint8 arrays to normalised, split, deterministically augmented torch datasets."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from slimkit.data.sources import RawData
from slimkit.errors import ConfigError, CorruptDataError, DataError
from slimkit.registry import DATASETS

__all__ = ["DatasetInfo", "DataSplits", "ImageDataset", "Loaders", "create_dataset", "list_datasets", "make_loaders",
           "with_index", "stratified_split"]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_chans: int
    image_size: tuple[int, int]
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, on the 0..1 scale, computed on the train split
    std: tuple[float, ...]


def _seed_for(*parts: int) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") & (2**63 - 1)


class ImageDataset(Dataset):
    """uint8 N x C x H x W images in memory -> normalised float tensors, with optional augmentation.

    Augmentation (random crop with zero padding, optional horizontal flip) is a pure function of
    (seed, epoch, index): `set_epoch(e)` selects the epoch, so resumed runs and logit stores replay it exactly.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, *,
                 augment: bool = False, pad: int = 0, flip: bool = False, seed: int = 0) -> None:
        self.images, self.labels = images, labels
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
        self.augment, self.pad, self.flip, self.seed = augment, pad, flip, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        if self.augment:
            x = self.augment_image(x, i)
        x = (x.float() / 255.0 - self.mean) / self.std
        return x, self.labels[i]

    def augment_image(self, x: torch.Tensor, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(_seed_for(self.seed, self.epoch, int(i)))
        if self.pad:
            h, w = x.shape[-2:]
            x = torch.nn.functional.pad(x, (self.pad,) * 4)
            dy, dx = (int(v) for v in torch.randint(0, 2 * self.pad + 1, (2,), generator=g))
            x = x[:, dy:dy + h, dx:dx + w]
        if self.flip and bool(torch.randint(0, 2, (1,), generator=g)):
            x = x.flip(-1)
        return x


class _Indexed(Dataset):
    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.ds, "set_epoch"):
            self.ds.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.ds)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        return (*self.ds[i], i)


def with_index(ds: Dataset) -> Dataset:
    """Wrap a dataset so items are `(x, y, index)` (for per-sample stores such as stored-logit distillation)."""
    return _Indexed(ds)


@dataclass(frozen=True)
class DataSplits:
    train: ImageDataset
    val: ImageDataset
    test: ImageDataset
    info: DatasetInfo


@dataclass(frozen=True)
class Loaders:
    train: DataLoader
    val: DataLoader
    test: DataLoader
    info: DatasetInfo = field(repr=False)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (keep, held_out) with about `fraction` of every class held out, chosen by `seed`."""
    rng = np.random.default_rng(seed)
    held = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng.shuffle(idx)
        held.append(idx[: int(round(len(idx) * fraction))])
    held_idx = np.sort(np.concatenate(held)) if held else np.array([], dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), held_idx)
    return keep, held_idx


def _balanced_subset(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    classes = np.unique(labels)
    rng = np.random.default_rng(seed)
    per = max(1, limit // len(classes))
    picks = [rng.permutation(np.flatnonzero(labels == c))[:per] for c in classes]
    return np.sort(np.concatenate(picks))[:limit]


def list_datasets() -> list[str]:
    """Names accepted by `create_dataset` (a path to a .npz file or an image folder works too)."""
    return DATASETS.list()


def _resolve(name: str, root: str | Path | None) -> tuple[str, str | Path | None]:
    if name in DATASETS:
        return name, root
    p = Path(name)
    if p.suffix == ".npz" and p.exists():
        return "npz", p
    if p.is_dir():
        return "folder", p
    return name, root  # the registry raises UnknownNameError listing the known names


def create_dataset(name: str, root: str | Path | None = None, *, seed: int = 0, val_fraction: float = 0.1,
                   augment: bool = True, limit: int | None = None, flip: bool | None = None) -> DataSplits:
    """Load a dataset by name (or .npz path / image folder) into train/val/test splits.

    The test split is the dataset's own (or a fixed 20% carved out with seed 0 when it has none); the validation
    split is a stratified `val_fraction` of train chosen by `seed`; `limit` keeps a class-balanced subset of train.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    kind, root = _resolve(name, root)
    raw: RawData = DATASETS.create(kind, root=root)
    x, y, xt, yt = raw.x_train, raw.y_train, raw.x_test, raw.y_test
    top = max(int(v.max()) for v in (y, yt) if v is not None and len(v))
    if top >= len(raw.class_names):
        raise CorruptDataError(f"{raw.name}: label {top} is out of range for its {len(raw.class_names)} classes "
                               f"(ids 0..{len(raw.class_names) - 1}); the label file is broken")
    if xt is None:
        keep, test_idx = stratified_split(y, 0.2, 0)
        x, y, xt, yt = x[keep], y[keep], x[test_idx], y[test_idx]
    if xt.shape[1:] != x.shape[1:]:
        raise DataError(f"{raw.name}: train images are {x.shape[1:]} but test images are {xt.shape[1:]}")
    if limit is not None:
        sub = _balanced_subset(y, int(limit), seed)
        x, y = x[sub], y[sub]
    keep, val_idx = stratified_split(y, val_fraction, seed)
    xtr, ytr = torch.from_numpy(x[keep]), torch.from_numpy(y[keep])
    stats = xtr.float().div(255.0)
    mean = stats.mean(dim=(0, 2, 3))
    std = stats.std(dim=(0, 2, 3)).clamp_min(1e-3)
    h, w = x.shape[-2:]
    pad = max(1, round(min(h, w) / 8))
    do_flip = raw.flip if flip is None else flip
    info = DatasetInfo(raw.name, len(raw.class_names), int(x.shape[1]), (int(h), int(w)),
                       tuple(raw.class_names), tuple(mean.tolist()), tuple(std.tolist()))

    def make(xs: Any, ys: Any, aug: bool) -> ImageDataset:
        return ImageDataset(torch.as_tensor(xs), torch.as_tensor(ys), mean, std, augment=aug, pad=pad, flip=do_flip,
                            seed=seed)

    return DataSplits(make(xtr, ytr, augment), make(x[val_idx], y[val_idx], False), make(xt, yt, False), info)


def make_loaders(splits: DataSplits, batch_size: int = 128, *, num_workers: int = 0, seed: int = 0) -> Loaders:
    """DataLoaders: train shuffled by a seeded generator, val/test in order."""
    g = torch.Generator().manual_seed(seed)
    kw: dict[str, Any] = {"batch_size": batch_size, "num_workers": num_workers}
    return Loaders(DataLoader(splits.train, shuffle=True, generator=g, **kw), DataLoader(splits.val, **kw),
                   DataLoader(splits.test, **kw), splits.info)
