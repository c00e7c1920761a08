"""Per-image transforms as pure functions of (image, settings, generator): the same (seed, epoch, index) gives the
same view in any process, so resumed runs, DataLoader workers and logit stores replay augmentation exactly.

Two regimes share one pipeline (`ImageDataset`):
- native size (no `input_size`): zero-padded random crop + flip, the CIFAR / Fashion-MNIST recipe;
- `View(size=...)`: random-resized-crop + flip for training, resize (shorter side to size / crop_pct) + centre crop
  for evaluation, as timm / torchvision evaluate ImageNet models. The pixel work is torchvision's
  (`transforms.v2.functional`); only the random parameters are drawn here, from a per-sample generator, because
  torchvision's own RandomResizedCrop draws from the process-global RNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms.v2 import functional as TF

from slimkit.errors import ConfigError

__all__ = ["View", "DEFAULT_CROP_PCT", "DEFAULT_SCALE", "default_scale", "parse_input_size", "pad_crop_flip",
           "resized_crop_params", "train_view", "eval_view", "eval_size", "match_channels"]

DEFAULT_CROP_PCT = 0.875  # timm's default: evaluate on the central 87.5% after resizing
# Random-resized-crop area range. ImageNet recipes use (0.08, 1); slimkit's default keeps at least a quarter of the
# image: the datasets trained here are small (thousands of images, a few epochs) and often upsampled from 28-32 px,
# where an 8% crop is a 8x8-pixel patch that rarely still shows the class. Inputs up to SMALL_INPUT px keep at least
# half (`default_scale`; see the README's measurement).
DEFAULT_SCALE = (0.25, 1.0)
SMALL_INPUT_SCALE = (0.5, 1.0)
SMALL_INPUT = 32  # px, shorter side: the largest input size (0.5, 1) was measured better at


def default_scale(size: tuple[int, int]) -> tuple[float, float]:
    """The random-resized-crop area range for an input of `size` (height, width): (0.5, 1) up to 32 px on the
    shorter side, where it was measured better (benchmarks/crop_scale.py: ResNet-20, Fashion-MNIST at 32 px, 3 seeds,
    test accuracy 0.699 vs 0.674 for (0.25, 1) and 0.630 for (0.08, 1)); (0.25, 1) above (not measured there)."""
    return SMALL_INPUT_SCALE if min(size) <= SMALL_INPUT else DEFAULT_SCALE
DEFAULT_RATIO = (3 / 4, 4 / 3)
_INTERPOLATIONS = {"bilinear": TF.InterpolationMode.BILINEAR, "bicubic": TF.InterpolationMode.BICUBIC,
                   "nearest": TF.InterpolationMode.NEAREST}


@dataclass(frozen=True)
class View:
    """How images are brought to the model's input size."""

    size: tuple[int, int]  # output height, width
    crop_pct: float = DEFAULT_CROP_PCT  # evaluation: resize the shorter side to size / crop_pct, then centre crop
    scale: tuple[float, float] = DEFAULT_SCALE  # training: random-resized-crop area range (fraction of the image)
    ratio: tuple[float, float] = DEFAULT_RATIO  # training: aspect-ratio range of the crop
    interpolation: str = "bilinear"  # bilinear, bicubic or nearest (antialiased when shrinking)

    def __post_init__(self) -> None:
        if len(self.size) != 2 or min(self.size) < 1:
            raise ConfigError(f"input size must be two positive numbers (height, width), got {self.size}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"crop_pct must be in (0, 1], got {self.crop_pct}")
        if not 0.0 < self.scale[0] <= self.scale[1] <= 1.0:
            raise ConfigError(f"random-resized-crop scale must satisfy 0 < min <= max <= 1, got {self.scale}")
        if not 0.0 < self.ratio[0] <= self.ratio[1]:
            raise ConfigError(f"random-resized-crop ratio must satisfy 0 < min <= max, got {self.ratio}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ConfigError(f"interpolation {self.interpolation!r}: use one of {sorted(_INTERPOLATIONS)}")

    def describe(self) -> str:
        """One line naming every setting (stable: logit stores compare it)."""
        h, w = self.size
        return (f"{h}x{w} crop_pct={self.crop_pct:g} scale=({self.scale[0]:g},{self.scale[1]:g}) "
                f"ratio=({self.ratio[0]:.4g},{self.ratio[1]:.4g}) {self.interpolation}")


def parse_input_size(value: Any) -> tuple[int | None, int, int] | None:
    """`224`, `"224"`, `(160, 224)`, `"3,224,224"` or `"3x224x224"` -> (channels or None, height, width)."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p for p in value.replace("x", ",").split(",") if p.strip()]
    elif isinstance(value, int):
        parts = [value]
    else:
        parts = list(value)
    try:
        nums = [int(p) for p in parts]
    except (TypeError, ValueError):
        nums = []
    if len(nums) not in (1, 2, 3) or min(nums, default=0) < 1:
        raise ConfigError(f"input size {value!r}: give SIZE (224), H,W (160,224) or C,H,W (3,224,224)")
    if len(nums) == 3 and nums[0] not in (1, 3):
        raise ConfigError(f"input size {value!r}: the channel count must be 1 (grey) or 3 (RGB)")
    if len(nums) == 1:
        return None, nums[0], nums[0]
    return (None, *nums) if len(nums) == 2 else (nums[0], nums[1], nums[2])  # type: ignore[return-value]


def _randint(g: torch.Generator, low: int, high: int) -> int:
    """Uniform integer in [low, high] (inclusive) from `g`."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def pad_crop_flip(x: torch.Tensor, pad: int, flip: bool, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by `pad`, crop back to the original size at a random offset, flip left-right with p=0.5."""
    if pad:
        h, w = x.shape[-2:]
        x = torch.nn.functional.pad(x, (pad,) * 4)
        dy, dx = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,), generator=g))
        x = x[:, dy:dy + h, dx:dx + w]
    if flip and bool(torch.randint(0, 2, (1,), generator=g)):
        x = x.flip(-1)
    return x


def resized_crop_params(height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float],
                        g: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop covering `scale` of the area with aspect ratio in `ratio` (log-uniform):
    torchvision's RandomResizedCrop.get_params, drawing from `g` instead of the global RNG."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(2, generator=g, dtype=torch.float64).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return _randint(g, 0, height - h), _randint(g, 0, width - w), h, w
    in_ratio = width / height  # fallback: the central crop with the ratio clamped into range
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, int(round(height * ratio[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def train_view(x: torch.Tensor, view: View, flip: bool, g: torch.Generator) -> torch.Tensor:
    """Random-resized-crop to `view.size` (+ horizontal flip with p=0.5 when `flip`), parameters drawn from `g`."""
    top, left, h, w = resized_crop_params(x.shape[-2], x.shape[-1], view.scale, view.ratio, g)
    x = TF.resized_crop(x, top, left, h, w, list(view.size), interpolation=_INTERPOLATIONS[view.interpolation],
                        antialias=True)
    if flip and bool(torch.randint(0, 2, (1,), generator=g)):
        x = TF.horizontal_flip(x)
    return x


def eval_size(height: int, width: int, view: View) -> tuple[int, int]:
    """The size an image is resized to before the centre crop: shorter side to size / crop_pct (timm's rule)."""
    if view.size[0] == view.size[1]:
        short = int(math.floor(view.size[0] / view.crop_pct))
        if height <= width:
            return short, max(short, int(short * width / height))
        return max(short, int(short * height / width)), short
    return tuple(int(math.floor(s / view.crop_pct)) for s in view.size)  # type: ignore[return-value]


def eval_view(x: torch.Tensor, view: View) -> torch.Tensor:
    """Resize (shorter side to size / crop_pct, aspect kept) then centre-crop to `view.size`."""
    size = eval_size(x.shape[-2], x.shape[-1], view)
    if tuple(x.shape[-2:]) != size:
        x = TF.resize(x, list(size), interpolation=_INTERPOLATIONS[view.interpolation], antialias=True)
    return TF.center_crop(x, list(view.size))


def match_channels(x: torch.Tensor, chans: int) -> torch.Tensor:
    """(... x) C x H x W images to `chans` channels: grey repeated to RGB, RGB to grey by luminance (ITU-R 601)."""
    c = x.shape[-3]
    if c == chans:
        return x
    if c == 1 and chans == 3:
        return x.expand(*x.shape[:-3], 3, -1, -1)
    if c == 3 and chans == 1:
        return TF.rgb_to_grayscale(x, num_output_channels=1)
    raise ConfigError(f"cannot turn {c}-channel images into {chans}-channel ones: use 1 (grey) or 3 (RGB) channels")
