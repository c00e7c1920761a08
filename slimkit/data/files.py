"""Images on disk, decoded lazily: only paths, labels' order and header facts are kept in memory.

`ImageFiles` behaves like the uint8 N x C x H x W arrays of the in-memory datasets where `create_dataset` needs it
(`len`, `shape`, fancy indexing for splits) and decodes one image at a time with PIL (`load(i)`), so a folder of
many 224-px images costs the RAM of its paths, and decoding runs in DataLoader worker processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from slimkit.errors import CorruptDataError

__all__ = ["ImageFiles", "scan_images", "GREY_MODES"]

GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})


def _bad(path: Path, e: Exception) -> CorruptDataError:
    return CorruptDataError(f"{path}: not a readable image ({type(e).__name__}: {e}); remove it or fix it")


def _eight_bit(im: Any) -> Any:
    """A 16-bit (or 32-bit integer) grey image scaled to 8 bits (0..65535 -> 0..255): PIL's convert to L / RGB
    clips such values at 255, which turns a 16-bit PNG or TIFF almost white."""
    from PIL import Image

    if im.mode not in ("I;16", "I;16B", "I;16L", "I"):
        return im
    arr = np.asarray(im).astype(np.float64)
    return Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8), "L")


def scan_images(paths: list[Path]) -> tuple[list[tuple[int, int]], bool]:
    """Open every file's header (not its pixels): (height, width) of each, and whether all are grey.

    Finds files that are not images, or whose header is damaged, before any training starts; a file truncated
    after a valid header is found when it is decoded (CorruptDataError naming the file)."""
    from PIL import Image

    sizes, grey = [], True
    for p in paths:
        try:
            with Image.open(p) as im:
                sizes.append((int(im.size[1]), int(im.size[0])))
                grey = grey and im.mode in GREY_MODES
        except Exception as e:  # noqa: BLE001 - whatever PIL raises, the file is unusable
            raise _bad(p, e) from None
    return sizes, grey


@dataclass(frozen=True, eq=False)
class ImageFiles:
    """Image files read on demand as uint8 C x H x W tensors (`mode` "L" for grey folders, else "RGB").

    `resize_to` (height, width) resizes every decoded image to one size (PIL's default filter), for the native-size
    pipeline, which needs equal sizes; with an input size the transform resizes instead and this stays None."""

    paths: np.ndarray  # str paths
    sizes: np.ndarray  # N x 2 (height, width) from the headers
    mode: str
    resize_to: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, idx: Any) -> ImageFiles:
        idx = np.asarray(idx)
        return ImageFiles(self.paths[idx], self.sizes[idx], self.mode, self.resize_to)

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(N, C, H, W) with H, W the common size (`resize_to`, else the first image's)."""
        h, w = self.resize_to or (tuple(int(v) for v in self.sizes[0]) if len(self.sizes) else (0, 0))
        return len(self.paths), self.channels, h, w

    def load(self, i: int) -> torch.Tensor:
        """Decode image `i` as a uint8 C x H x W tensor; CorruptDataError names the file if it cannot be read."""
        from PIL import Image

        path = Path(str(self.paths[i]))
        try:
            with Image.open(path) as im:
                im = _eight_bit(im).convert(self.mode)
                if self.resize_to is not None and im.size[::-1] != self.resize_to:
                    im = im.resize(self.resize_to[::-1])
                arr = np.asarray(im, dtype=np.uint8)
        except CorruptDataError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated data, bad CRC, vanished file: all name the file
            raise _bad(path, e) from None
        t = torch.from_numpy(arr.copy())
        return t[None] if t.ndim == 2 else t.permute(2, 0, 1).contiguous()

    def fingerprint(self) -> str:
        """sha256 over class folder / file names and file sizes (what a logit store checks instead of hashing every
        pixel); unchanged when the whole folder moves."""
        h = hashlib.sha256()
        for p in self.paths:
            path = Path(str(p))
            h.update(f"{path.parent.name}/{path.name}:{path.stat().st_size};".encode())
        return h.hexdigest()
