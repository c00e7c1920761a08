"""TinyViT fast pretraining distillation (Wu et al., ECCV 2022): run the teacher once, distil from its stored top-k.

The teacher sees every (epoch, image) once, on the *augmented* image; only its top-k softmax probabilities (fp16)
and class indices (int16; int32 beyond 32768 classes) are kept, as in TinyViT's `save_logits.py`. `ImageDataset`
augmentation is a pure function of (seed, epoch, index), so `set_epoch(e)` replays the crops and flips the teacher
saw and the student trains on the same images without the teacher.

On disk (`out_dir`): `manifest.json` (format, version, k, num_classes, epochs, images, shard size, a fingerprint of
the dataset, and per shard its count and the size and sha256 of each file) plus, per shard (one epoch, or
`shard_size` images of one epoch), `e{epoch}_{start}.values.npy` (count x k float16) and `.indices.npy`. A shard
is written under a temporary name, renamed, then recorded in the manifest, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from slimkit.errors import CorruptDataError, DataNotFoundError, DistillError, SlimkitError
from slimkit.fileio import atomic_write, file_sha256

__all__ = ["LogitStore", "dataset_fingerprint", "write_logit_store"]

FORMAT, VERSION, MANIFEST = "slimkit-logit-store", 1, "manifest.json"
_FIX = ("rerun `slimkit distill store-logits` with the same --out (from Python: write_logit_store with the same "
        "out_dir): complete shards are kept, this one is rewritten")


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


_AUGMENTATION_KEYS = ("seed", "augment", "pad", "flip", "view")


def dataset_fingerprint(dataset: Dataset) -> dict[str, Any]:
    """What must not change between writing and using a store: length, augmentation settings, image/label hash."""
    base = getattr(dataset, "ds", dataset)  # unwrap `with_index`
    info: dict[str, Any] = {"len": len(dataset)}  # type: ignore[arg-type]
    for name in ("seed", "augment", "pad", "flip"):
        if hasattr(base, name):
            info[name] = getattr(base, name)
    if getattr(base, "view", None) is not None:  # resized views: size, crop and channels must match too
        info["view"] = f"{base.view.describe()} chans={base.in_chans}"
    images, labels = getattr(base, "images", None), getattr(base, "labels", None)
    if isinstance(labels, torch.Tensor) and (isinstance(images, torch.Tensor) or hasattr(images, "fingerprint")):
        # in-memory pixels are hashed; lazily decoded files by their names and sizes
        h = hashlib.sha256(images.detach().cpu().contiguous().numpy().tobytes() if isinstance(images, torch.Tensor)
                           else images.fingerprint().encode())
        h.update(labels.detach().cpu().contiguous().numpy().tobytes())
        info["sha256"] = h.hexdigest()
    return info


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / MANIFEST
    if not path.is_file():
        raise DataNotFoundError(f"no logit store at {root} ({MANIFEST} is missing): build one with "
                                f"write_logit_store(teacher, dataset, {str(root)!r}, epochs, k)")
    try:
        m = json.loads(path.read_text())
        fmt, ver = m.get("format"), m.get("version")
    except (ValueError, AttributeError) as e:
        raise CorruptDataError(f"{path} is not a valid logit-store manifest ({e}): delete {root} and rebuild it "
                               "with write_logit_store") from e
    if fmt != FORMAT or ver != VERSION:
        raise DistillError(f"{path}: format {fmt!r} version {ver!r}, but this slimkit reads {FORMAT!r} version "
                           f"{VERSION}: rebuild the store with this version's write_logit_store")
    return m


def _open_shard(root: Path, name: str, entry: dict[str, Any], k: int, verify: bool) -> list[np.ndarray]:
    """Memory-map one shard's two files after checking presence, size, checksum (if `verify`), shape and dtype."""
    arrays = []
    for kind, dtypes in (("values", ("float16",)), ("indices", ("int16", "int32"))):
        rec = entry[kind]
        path = root / rec["file"]
        if not path.is_file():
            raise DataNotFoundError(f"logit-store shard {name}: {path} is missing; {_FIX}")
        size = path.stat().st_size
        if size != rec["bytes"]:
            raise CorruptDataError(f"logit-store shard {name}: {path} has {size} bytes, the manifest says "
                                   f"{rec['bytes']} (truncated or overwritten); {_FIX}")
        if verify and file_sha256(path) != rec["sha256"]:
            raise CorruptDataError(f"logit-store shard {name}: {path} fails its sha256 check (corrupt); {_FIX}")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as e:
            raise CorruptDataError(f"logit-store shard {name}: {path} is not a readable .npy ({e}); {_FIX}") from e
        if arr.shape != (entry["count"], k) or arr.dtype.name not in dtypes:
            raise CorruptDataError(f"logit-store shard {name}: {path} holds {arr.dtype} {arr.shape}, expected "
                                   f"{dtypes[0]} {(entry['count'], k)}; {_FIX}")
        arrays.append(arr)
    return arrays


class LogitStore:
    """Read side of a store: `lookup(epoch, indices)` -> (top-k probabilities float32, class indices int64).

    Shards are memory-mapped on first use; with `verify=True` each file's sha256 is checked once, on that first use.
    """

    def __init__(self, path: str | Path, *, verify: bool = True) -> None:
        self.root, self.verify = Path(path), verify
        self.manifest = _read_manifest(self.root)
        self._shards: dict[str, list[np.ndarray]] = {}

    k = property(lambda self: int(self.manifest["k"]))
    num_classes = property(lambda self: int(self.manifest["num_classes"]))
    epochs = property(lambda self: int(self.manifest["epochs"]))
    num_images = property(lambda self: int(self.manifest["num_images"]))
    shard_size = property(lambda self: int(self.manifest["shard_size"]))

    def _shard(self, epoch: int, start: int) -> list[np.ndarray]:
        name = f"e{epoch:04d}_{start:09d}"
        if name not in self._shards:
            entry = self.manifest["shards"].get(name)
            if entry is None:
                raise DistillError(f"logit store {self.root} has no shard {name} (epoch {epoch}, images from "
                                   f"{start}): it holds epochs 0..{self.epochs - 1}, some possibly unfinished; "
                                   f"{_FIX}, or train for fewer epochs")
            self._shards[name] = _open_shard(self.root, name, entry, self.k, self.verify)
        return self._shards[name]

    def check(self, epochs: int) -> None:
        """Open (and, with `verify`, checksum) every shard of the first `epochs` epochs now, so a missing or corrupt
        shard stops a run before training rather than when training reaches it."""
        if epochs > self.epochs:
            raise DistillError(f"logit store {self.root} holds {self.epochs} epochs, training needs {epochs}: "
                               f"write more ({_FIX}, with --epochs {epochs}), cycle the store, or train for fewer")
        for epoch in range(epochs):
            for start in range(0, self.num_images, self.shard_size):
                self._shard(epoch, start)

    def lookup(self, epoch: int, indices: torch.Tensor | np.ndarray | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's stored top-k for images `indices` as augmented in `epoch` (CPU tensors, sorted by prob)."""
        idx = torch.as_tensor(indices).detach().cpu().long().reshape(-1).numpy()
        if not 0 <= epoch < self.epochs:
            raise DistillError(f"epoch {epoch} is not in logit store {self.root} (epochs 0..{self.epochs - 1}): "
                               "write more epochs with write_logit_store or train for fewer")
        if len(idx) and (idx.min() < 0 or idx.max() >= self.num_images):
            raise DistillError(f"image index {int(idx.min() if idx.min() < 0 else idx.max())} is outside logit store "
                               f"{self.root} ({self.num_images} images): use the dataset the store was written for")
        values = np.empty((len(idx), self.k), np.float32)
        classes = np.empty((len(idx), self.k), np.int64)
        shard_of = idx // self.shard_size
        for s in np.unique(shard_of):
            rows = shard_of == s
            v, c = self._shard(int(epoch), int(s) * self.shard_size)
            local = idx[rows] - int(s) * self.shard_size
            values[rows], classes[rows] = v[local], c[local]
        return torch.from_numpy(values), torch.from_numpy(classes)

    def check_dataset(self, dataset: Dataset, augmentation: bool = True) -> None:
        """Raise DistillError if `dataset` is not the one (same images, length and, with `augmentation`, the same
        augmentation settings) the store was made on."""
        have, want = dataset_fingerprint(dataset), self.manifest["dataset"]
        skip = set() if augmentation else set(_AUGMENTATION_KEYS)
        diff = sorted(key for key in (set(have) | set(want)) - skip if have.get(key) != want.get(key))
        if diff:
            raise DistillError(f"dataset differs from the one logit store {self.root} was written for (in {diff}): "
                               "use the same data, split seed and augmentation, or rebuild the store")


def _teacher_topk(teacher: nn.Module, dataset: Dataset, rows: range, k: int, batch_size: int, num_workers: int,
                  device: torch.device, advance: Callable[[int], None]) -> tuple[np.ndarray, np.ndarray, int]:
    loader = DataLoader(Subset(dataset, rows), batch_size=batch_size, num_workers=num_workers)
    values, classes, num_classes = [], [], 0
    with torch.no_grad():
        for batch in loader:
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            probs = torch.softmax(teacher(x.to(device)).float(), dim=1)
            num_classes = probs.shape[1]
            if k > num_classes:
                raise DistillError(f"k={k} is more than the teacher's {num_classes} classes: pick k <= {num_classes}")
            v, c = probs.topk(k, dim=1)
            values.append(v.cpu())
            classes.append(c.cpu())
            advance(len(x))
    return torch.cat(values).half().numpy(), torch.cat(classes).numpy(), num_classes


def _new_or_resumed_manifest(root: Path, k: int, n: int, shard_size: int, fingerprint: dict[str, Any]) -> dict:
    fresh = {"format": FORMAT, "version": VERSION, "values": "teacher softmax probability (T=1), top-k, sorted",
             "k": k, "num_classes": None, "epochs": 0, "num_images": n, "shard_size": shard_size,
             "dataset": fingerprint, "shards": {}}
    if not (root / MANIFEST).is_file():
        return fresh
    m = _read_manifest(root)
    for key in ("k", "num_images", "shard_size", "dataset"):
        if m[key] != fresh[key]:
            raise DistillError(f"{root / MANIFEST} was written with {key}={m[key]!r}, now {fresh[key]!r}: pass the "
                               "same arguments and dataset to resume, or use a new out_dir")
    return m


def _shard_ok(root: Path, name: str, manifest: dict[str, Any], k: int) -> bool:
    """True if the manifest records shard `name` and its files pass every check; else forget it (to recompute)."""
    try:
        if name in manifest["shards"]:
            _open_shard(root, name, manifest["shards"][name], k, verify=True)
            return True
    except SlimkitError:
        del manifest["shards"][name]
    return False


def _save_shard(root: Path, name: str, entry: dict[str, Any], values: np.ndarray, classes: np.ndarray) -> dict:
    for kind, arr in (("values", values), ("indices", classes)):
        data = _npy_bytes(np.ascontiguousarray(arr))
        atomic_write(root / f"{name}.{kind}.npy", data)
        entry[kind] = {"file": f"{name}.{kind}.npy", "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return entry


def write_logit_store(teacher: nn.Module, dataset: Dataset, out_dir: str | Path, epochs: int, k: int = 10,
                      batch_size: int = 256, *, shard_size: int | None = None, num_workers: int = 0,
                      device: str | torch.device | None = None, progress: bool = True) -> LogitStore:
    """Run `teacher` (put in eval mode) once per epoch 0..epochs-1 over `dataset` (after `set_epoch`), store top-k.

    Resumable: shards already recorded in the manifest whose files pass the sha256 check are skipped; missing or
    corrupt ones are recomputed. Asking for more epochs than an existing store holds extends it.
    """
    n = len(dataset)  # type: ignore[arg-type]
    shard_size = n if shard_size is None else int(shard_size)
    if epochs < 1 or k < 1 or batch_size < 1 or n < 1 or shard_size < 1:
        raise DistillError(f"need epochs, k, batch_size, shard_size >= 1 and a non-empty dataset (got epochs={epochs}"
                           f", k={k}, batch_size={batch_size}, shard_size={shard_size}, {n} images)")
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    m = _new_or_resumed_manifest(root, k, n, shard_size, dataset_fingerprint(dataset))
    todo = [(e, s, f"e{e:04d}_{s:09d}") for e in range(epochs) for s in range(0, n, shard_size)]
    todo = [t for t in todo if not _shard_ok(root, t[2], m, k)]
    teacher.eval()
    dev = torch.device(device) if device is not None else next(teacher.parameters(), torch.empty(0)).device
    total = sum(min(shard_size, n - s) for _, s, _ in todo)
    bar = Progress(TextColumn("teacher top-{task.fields[k]}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), console=Console(stderr=True), disable=not progress)
    with bar:
        task = bar.add_task("logits", total=total, k=k)
        for e, s, name in todo:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(e)
            rows = range(s, min(s + shard_size, n))
            values, classes, c = _teacher_topk(teacher, dataset, rows, k, batch_size, num_workers, dev,
                                               lambda i: bar.advance(task, i))
            if m["num_classes"] not in (None, c):
                raise DistillError(f"teacher predicts {c} classes but {root} holds {m['num_classes']}: use the same "
                                   "teacher to resume, or a new out_dir")
            m["num_classes"] = c
            m["shards"][name] = _save_shard(root, name, {"epoch": e, "start": s, "count": len(rows)}, values,
                                            classes.astype(np.int16 if c <= 32768 else np.int32))
            atomic_write(root / MANIFEST, json.dumps(m, indent=1).encode())
    m["epochs"] = max(m["epochs"], epochs)
    atomic_write(root / MANIFEST, json.dumps(m, indent=1).encode())
    return LogitStore(root, verify=False)
