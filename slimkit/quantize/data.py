"""Images in, numbers out: calibration batches for onnxruntime's quantizer, and onnxruntime logits / accuracy.

Batches may be tensors, numpy arrays, or `(images, labels, ...)` tuples as a DataLoader yields them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from slimkit.errors import ConfigError, ExportError

__all__ = ["Batches", "as_batches", "calibration_reader", "onnx_logits", "accuracy"]


@dataclass(frozen=True)
class Batches:
    images: tuple[np.ndarray, ...]  # float32 N x C x H x W per batch
    labels: tuple[np.ndarray, ...] | None  # int64 per batch, None when the batches carry no labels

    @property
    def count(self) -> int:
        return sum(len(x) for x in self.images)


def _array(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def as_batches(data: Iterable[Any] | None, limit: int | None = None, what: str = "calibration") -> Batches:
    """Up to `limit` images from an iterable of batches (tensors, arrays or (images, labels, ...) tuples)."""
    if data is None:
        raise ConfigError(f"INT8 {what} needs images: pass batches of training images (a DataLoader, a list of "
                          "tensors or of (images, labels) tuples)")
    images, labels, n = [], [], 0
    for batch in data:
        x, y = (batch[0], batch[1] if len(batch) > 1 else None) if isinstance(batch, (tuple, list)) else (batch, None)
        x = _array(x).astype(np.float32, copy=False)
        if x.ndim < 2:
            raise ConfigError(f"INT8 {what} batches must be N x C x H x W images, got shape {x.shape}")
        if limit is not None:
            x = x[: max(0, limit - n)]
        if not len(x):
            break
        images.append(np.ascontiguousarray(x))
        labels.append(None if y is None else _array(y).astype(np.int64)[: len(x)])
        n += len(x)
        if limit is not None and n >= limit:
            break
    if not images:
        raise ConfigError(f"INT8 {what} data is empty: pass at least one batch of images (e.g. "
                          "`itertools.islice(train_loader, 8)`)")
    have = [y is not None for y in labels]
    return Batches(tuple(images), tuple(labels) if all(have) else None)  # type: ignore[arg-type]


def calibration_reader(batches: Batches, input_name: str, max_values: int = 1_300_000) -> Any:
    """An `onnxruntime.quantization.CalibrationDataReader` over the batches, split so that no item holds more than
    `max_values` input numbers (~8 RGB images at 224): the calibrator keeps every intermediate tensor of an item."""
    from onnxruntime.quantization import CalibrationDataReader

    items = []
    for x in batches.images:
        step = max(1, max_values // max(1, int(np.prod(x.shape[1:]))))
        items += [x[i:i + step] for i in range(0, len(x), step)]

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.start, self.end, self.pos = 0, len(items), 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            i = self.start + self.pos
            if i >= self.end:
                return None
            self.pos += 1
            return {input_name: items[i]}

        def __len__(self) -> int:
            return len(items)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.start, self.end, self.pos = start_index, min(end_index, len(items)), 0

    return _Reader()


def onnx_logits(session: Any, batches: Batches) -> np.ndarray:
    """The first output of `session` over all batches, concatenated (N x classes)."""
    name = session.get_inputs()[0].name
    try:
        return np.concatenate([session.run(None, {name: x})[0] for x in batches.images])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own error types from C++
        why = (str(e).strip().splitlines() or [""])[0][:300]
        raise ExportError(f"onnxruntime could not run the model ({type(e).__name__}: {why}); this is a bug to "
                          "report with the model, or keep the failing layer in float (int8.exclude)") from e


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(1) == labels).mean()) if len(labels) else 0.0
