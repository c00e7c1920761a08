"""From raw uint8 arrays to normalised, split, deterministically augmented torch datasets."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from slimkit.data.files import ImageFiles
from slimkit.data.sources import RawData
from slimkit.data.transforms import (
    DEFAULT_CROP_PCT,
    View,
    default_scale,
    eval_view,
    match_channels,
    pad_crop_flip,
    parse_input_size,
    train_view,
)
from slimkit.errors import ConfigError, CorruptDataError, DataError
from slimkit.registry import DATASETS

__all__ = ["DatasetInfo", "DataSplits", "ImageDataset", "Loaders", "create_dataset", "default_workers",
           "list_datasets", "make_loaders", "with_index", "stratified_split"]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    in_chans: int  # channels the model receives (after grey -> RGB or RGB -> grey, when asked)
    image_size: tuple[int, int]  # height, width the model receives
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, on the 0..1 scale: the model's own, or computed on the train split
    std: tuple[float, ...]
    view: View | None = None  # resize / crop settings (None: images at their native size)
    norm: str = "dataset"  # where mean / std come from: "dataset" (train-split statistics), else "given" or the source
    source_chans: int | None = None  # channels of the stored images (differs from in_chans when converted)


def _seed_for(*parts: int) -> int:
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") & (2**63 - 1)


class ImageDataset(Dataset):
    """uint8 images -> normalised float tensors, through one pipeline for every kind of source.

    `images` is an N x C x H x W uint8 tensor in memory, or `ImageFiles` decoded one at a time (lazy folders).
    Per item: load -> view -> channels -> normalise. Without a `view` the image keeps its size and training
    augmentation is a zero-padded random crop (+ flip); with one, training uses random-resized-crop (+ flip) and
    evaluation resize + centre crop (`slimkit.data.transforms`). `in_chans` repeats grey to RGB (or converts RGB to
    grey) for the model.

    Augmentation is a pure function of (seed, epoch, index): `set_epoch(e)` selects the epoch, so resumed runs and
    logit stores replay it exactly. The epoch is kept in shared memory, so it reaches DataLoader worker processes
    (persistent ones too) without rebuilding them.
    """

    def __init__(self, images: torch.Tensor | ImageFiles, labels: torch.Tensor, mean: torch.Tensor,
                 std: torch.Tensor, *, augment: bool = False, pad: int = 0, flip: bool = False, seed: int = 0,
                 view: View | None = None, in_chans: int | None = None) -> None:
        self.images, self.labels = images, labels
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
        self.augment, self.pad, self.flip, self.seed = augment, pad, flip, seed
        self.view = view
        self.in_chans = int(in_chans or images.shape[1])
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def __copy__(self) -> ImageDataset:
        """A shallow copy with its own epoch (images and labels shared)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._epoch = self._epoch.clone().share_memory_()
        return new

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int) -> torch.Tensor:
        """Image `i` as stored: uint8 C x H x W (decoded from its file for lazy folders)."""
        return self.images.load(i) if isinstance(self.images, ImageFiles) else self.images[i]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.load(i)
        g = torch.Generator().manual_seed(_seed_for(self.seed, self.epoch, int(i))) if self.augment else None
        if self.view is None:
            x = pad_crop_flip(x, self.pad, self.flip, g) if g is not None else x
        else:
            x = train_view(x, self.view, self.flip, g) if g is not None else eval_view(x, self.view)
        x = match_channels(x, self.in_chans)
        x = (x.float() / 255.0 - self.mean) / self.std
        return x, self.labels[i]

    @property
    def decodes(self) -> bool:
        """True when items cost real work (file decoding or resizing): worth DataLoader worker processes."""
        return isinstance(self.images, ImageFiles) or self.view is not None


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
    spare: ImageDataset | None = None  # training images outside the `limit` subset (never trained on; up to
    # SPARE_IMAGES, class-balanced, in a random order): extra held-out images for checks that need many (INT8)


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


SPARE_IMAGES = 5000


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


STATS_SAMPLE = 1000  # lazy folders: mean / std estimated from this many training images (all, when fewer)
AUTO_WORKERS = 2  # DataLoader workers for decoded / resized data (measured: benchmarks/loader_workers.py)


def _channel_stats(chunks: Iterable[torch.Tensor], chans: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (unbiased) std on the 0..1 scale of uint8 (N x) C x H x W chunks, in float64."""
    total = torch.zeros(chans, dtype=torch.float64)
    squares = torch.zeros(chans, dtype=torch.float64)
    count = 0
    for x in chunks:
        x = match_channels(x.reshape(-1, *x.shape[-3:]), chans).to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / max(count, 1)
    var = (squares - count * mean.square()) / max(count - 1, 1)
    return mean.float(), var.clamp_min(0).sqrt().float().clamp_min(1e-3)


def _stats(images: torch.Tensor | ImageFiles, chans: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(images, ImageFiles):
        n = len(images)
        pick = np.sort(np.random.default_rng(seed).permutation(n)[:STATS_SAMPLE]) if n > STATS_SAMPLE else range(n)
        return _channel_stats((images.load(int(i)) for i in pick), chans)
    return _channel_stats((images[s:s + 4096] for s in range(0, len(images), 4096)), chans)


def _per_channel(values: Any, chans: int, what: str) -> torch.Tensor:
    """A model's mean or std for `chans` channels: 3 values averaged for a grey model, 1 value repeated for RGB."""
    t = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if len(t) == chans:
        return t
    if len(t) == 1:
        return t.repeat(chans)
    if len(t) == 3 and chans == 1:
        return t.mean(0, keepdim=True)
    raise ConfigError(f"{what} has {len(t)} values but the model takes {chans} channels: give 1 or {chans}")


def create_dataset(name: str, root: str | Path | None = None, *, seed: int = 0, val_fraction: float = 0.1,
                   augment: bool = True, limit: int | None = None, flip: bool | None = None,
                   input_size: int | str | tuple[int, ...] | None = None, mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None, crop_pct: float | None = None,
                   scale: tuple[float, float] | None = None, interpolation: str | None = None) -> DataSplits:
    """Load a dataset by name (or .npz path / image folder) into train/val/test splits.

    The test split is the dataset's own (or a fixed 20% carved out with seed 0 when it has none); the validation
    split is a stratified `val_fraction` of train chosen by `seed`; `limit` keeps a class-balanced subset of train
    (the images left out, up to `SPARE_IMAGES`, are `spare`: never trained on, extra held-out images).

    `input_size` (224, (H, W) or (C, H, W)) brings every image to that size: random-resized-crop (`scale`) + flip for
    training, resize to size / `crop_pct` + centre crop for evaluation; C = 3 repeats grey images to RGB (C = 1
    turns RGB into grey). Without it images keep their native size (padded random crop + flip), as before.
    `mean` / `std` (the model's normalisation, e.g. timm's pretrained config) replace the train-split statistics.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if (mean is None) != (std is None):
        raise ConfigError("give both mean and std (the model's normalisation), or neither (dataset statistics)")
    size = parse_input_size(input_size)
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
    if isinstance(x, ImageFiles) and size is None and x.resize_to is None:  # native size: one size for all
        x, xt = (replace(f, resize_to=tuple(x.shape[-2:])) for f in (x, xt))
    if size is None and xt.shape[1:] != x.shape[1:]:
        raise DataError(f"{raw.name}: train images are {x.shape[1:]} but test images are {xt.shape[1:]}")
    spare = None
    if limit is not None:
        sub = _balanced_subset(y, int(limit), seed)
        rest = np.setdiff1d(np.arange(len(y)), sub)
        if len(rest):
            order = np.random.default_rng(seed + 1).permutation(rest[_balanced_subset(y[rest], SPARE_IMAGES, seed + 1)])
            spare = (x[order], y[order])
        x, y = x[sub], y[sub]
    keep, val_idx = stratified_split(y, val_fraction, seed)
    source_chans = int(x.shape[1])
    chans = (size[0] if size else None) or source_chans
    view = None if size is None else View(size[1:], crop_pct=DEFAULT_CROP_PCT if crop_pct is None else crop_pct,
                                          scale=tuple(scale or default_scale(size[1:])),
                                          interpolation=interpolation or "bilinear")
    xtr = x[keep] if isinstance(x, ImageFiles) else torch.from_numpy(x[keep])
    if mean is None:
        m, sd = _stats(xtr, chans, seed)
    else:
        m, sd = _per_channel(mean, chans, "mean"), _per_channel(std, chans, "std")
    h, w = view.size if view is not None else x.shape[-2:]
    pad = 0 if view is not None else max(1, round(min(h, w) / 8))
    do_flip = raw.flip if flip is None else flip
    info = DatasetInfo(raw.name, len(raw.class_names), chans, (int(h), int(w)),
                       tuple(raw.class_names), tuple(m.tolist()), tuple(sd.tolist()), view,
                       "dataset" if mean is None else "given", source_chans)
    m, sd = m.float(), sd.float()

    def make(xs: Any, ys: Any, aug: bool) -> ImageDataset:
        images = xs if isinstance(xs, ImageFiles) else torch.as_tensor(xs)
        return ImageDataset(images, torch.as_tensor(ys), m, sd, augment=aug, pad=pad, flip=do_flip, seed=seed,
                            view=view, in_chans=chans)

    return DataSplits(make(xtr, y[keep], augment), make(x[val_idx], y[val_idx], False), make(xt, yt, False), info,
                      None if spare is None else make(*spare, False))


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_workers(dataset: Dataset) -> int:
    """DataLoader worker processes for `dataset`: none for in-memory images at their native size (workers only add
    inter-process overhead there), min(AUTO_WORKERS, CPUs) when items are decoded from files or resized."""
    base = getattr(dataset, "ds", dataset)  # unwrap `with_index`
    return min(AUTO_WORKERS, available_cpus()) if getattr(base, "decodes", False) else 0


def make_loaders(splits: DataSplits, batch_size: int = 128, *, num_workers: int | None = None,
                 seed: int = 0) -> Loaders:
    """DataLoaders: train shuffled by a seeded generator, val/test in order. `num_workers=None` picks
    `default_workers` per split; any number gives the same batches (augmentation is per sample and seeded)."""
    if num_workers is not None and num_workers < 0:
        raise ConfigError(f"workers must be >= 0, got {num_workers}")
    g = torch.Generator().manual_seed(seed)

    def loader(ds: Dataset, **kw: Any) -> DataLoader:
        workers = default_workers(ds) if num_workers is None else num_workers
        return DataLoader(ds, batch_size=batch_size, num_workers=workers, **kw)

    return Loaders(loader(splits.train, shuffle=True, generator=g), loader(splits.val), loader(splits.test),
                   splits.info)
