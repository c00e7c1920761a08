import math

import numpy as np
import pytest
import torch
from PIL import Image

from slimkit.data import create_dataset, parse_input_size
from slimkit.data.transforms import View, eval_view, match_channels, resized_crop_params, train_view
from slimkit.errors import ConfigError

PIL_FILTERS = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC}


def _pil_eval(a: np.ndarray, size: int, crop_pct: float, interpolation: str) -> np.ndarray:
    """Independent reference: PIL resize of the shorter side to floor(size / crop_pct), then the central crop."""
    h, w = a.shape[:2]
    short = math.floor(size / crop_pct)
    nh, nw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    im = Image.fromarray(a).resize((nw, nh), PIL_FILTERS[interpolation])
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
    return np.asarray(im.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize("hw", [(37, 50), (300, 400), (250, 240)])
@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_eval_centre_crop_matches_pil_resize_and_crop(hw, interpolation):
    a = np.random.default_rng(hw[0]).integers(0, 256, (*hw, 3), dtype=np.uint8)
    x = torch.from_numpy(a).permute(2, 0, 1).contiguous()
    out = eval_view(x, View((224, 224), 0.875, interpolation=interpolation))
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8
    diff = np.abs(out.permute(1, 2, 0).numpy().astype(int) - _pil_eval(a, 224, 0.875, interpolation).astype(int))
    assert diff.max() <= 2 and (diff > 0).mean() < 0.02  # rounding differences only (torch vs PIL kernels)


def test_resized_crop_params_follow_scale_and_ratio():
    scale, ratio = (0.25, 1.0), (3 / 4, 4 / 3)
    for s in range(200):
        g = torch.Generator().manual_seed(s)
        top, left, h, w = resized_crop_params(60, 80, scale, ratio, g)
        assert 0 <= top <= 60 - h and 0 <= left <= 80 - w
        assert 0.25 * 4800 * 0.9 <= h * w <= 4800  # area within the scale range (rounding of h, w aside)
        assert ratio[0] * 0.9 <= w / h <= ratio[1] * 1.1
        assert resized_crop_params(60, 80, scale, ratio, torch.Generator().manual_seed(s)) == (top, left, h, w)
    # an impossible aspect range falls back to the central crop with the ratio clamped
    assert resized_crop_params(10, 100, (0.99, 1.0), (1.0, 1.0), torch.Generator().manual_seed(0)) == (0, 45, 10, 10)


def test_default_crop_scale_is_milder_up_to_32_px_where_it_was_measured():
    """(0.5, 1) up to 32 px on the shorter side (benchmarks/crop_scale.py, 3 seeds at 32 px), (0.25, 1) above; a
    scale given wins."""
    def scale(size, **kw):
        return create_dataset("digits", limit=20, val_fraction=0.0, input_size=size, **kw).info.view.scale

    assert scale(32) == (0.5, 1.0) and scale(16) == (0.5, 1.0) and scale("32,64") == (0.5, 1.0)
    assert scale(33) == (0.25, 1.0) and scale(224) == (0.25, 1.0)
    assert scale(32, scale=(0.08, 1.0)) == (0.08, 1.0)


def test_train_view_is_a_function_of_the_generator_and_varies():
    x = torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)
    v = View((224, 224))
    a = train_view(x, v, True, torch.Generator().manual_seed(1))
    assert a.shape == (3, 224, 224) and a.dtype == torch.uint8
    assert torch.equal(a, train_view(x, v, True, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, train_view(x, v, True, torch.Generator().manual_seed(2)))


def test_dataset_at_224_train_crops_per_epoch_and_eval_crop():
    s = create_dataset("digits", limit=40, val_fraction=0.0, input_size=224, flip=True)
    ds = s.train
    assert s.info.image_size == (224, 224) and s.info.in_chans == 1 and s.info.view.size == (224, 224)
    ds.set_epoch(0)
    e0 = [ds[i][0] for i in range(4)]
    assert all(x.shape == (1, 224, 224) for x in e0)
    assert all(torch.equal(x, ds[i][0]) for i, x in enumerate(e0))  # same (seed, epoch, index): same crop
    ds.set_epoch(1)
    assert all(not torch.equal(x, ds[i][0]) for i, x in enumerate(e0))  # another epoch: other crops
    again = create_dataset("digits", limit=40, val_fraction=0.0, input_size=224, flip=True).train  # a new object
    again.set_epoch(0)
    assert all(torch.equal(x, again[i][0]) for i, x in enumerate(e0))
    # evaluation: resize + centre crop of the stored 8x8 image, normalised with the train-split statistics
    x, _ = s.test[3]
    raw = s.test.images[3]
    ref = eval_view(raw, View((224, 224))).float() / 255.0
    assert torch.allclose(x, (ref - s.info.mean[0]) / s.info.std[0], atol=1e-5)
    assert torch.equal(s.test[3][0], x)  # evaluation is not random


def test_grey_repeated_to_three_channels():
    s = create_dataset("digits", limit=40, val_fraction=0.0, input_size="3,16,16")
    assert s.info.in_chans == 3 and s.info.source_chans == 1 and len(s.info.mean) == 3
    assert s.info.mean[0] == s.info.mean[1] == s.info.mean[2]
    x, _ = s.train[0]
    assert x.shape == (3, 16, 16) and torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])
    rgb = torch.randint(0, 256, (3, 5, 5), dtype=torch.uint8)
    grey = match_channels(rgb, 1)
    ref = (0.299 * rgb[0].float() + 0.587 * rgb[1].float() + 0.114 * rgb[2].float())
    assert grey.shape == (1, 5, 5) and (grey[0].float() - ref).abs().max() < 1.5  # uint8 rounding


def test_native_size_keeps_the_padded_crop():
    """Without --input-size: the same images as the original pipeline (pad, crop at a seeded offset, flip)."""
    import hashlib

    s = create_dataset("digits", limit=50, flip=True, seed=5)
    ds = s.train
    ds.set_epoch(2)
    for i in range(10):
        seed = int.from_bytes(hashlib.blake2b(repr((5, 2, i)).encode(), digest_size=8).digest(), "little") & (2**63 - 1)
        g = torch.Generator().manual_seed(seed)
        x = torch.nn.functional.pad(ds.images[i], (1,) * 4)
        dy, dx = (int(v) for v in torch.randint(0, 3, (2,), generator=g))
        x = x[:, dy:dy + 8, dx:dx + 8]
        if bool(torch.randint(0, 2, (1,), generator=g)):
            x = x.flip(-1)
        assert torch.equal(ds[i][0], (x.float() / 255.0 - ds.mean) / ds.std)
    assert s.info.view is None and s.info.image_size == (8, 8)


def test_model_normalisation_replaces_dataset_statistics():
    s = create_dataset("digits", limit=40, input_size=(3, 32, 32), mean=(0.485, 0.456, 0.406),
                       std=(0.229, 0.224, 0.225), crop_pct=0.95, interpolation="bicubic")
    assert s.info.mean == pytest.approx((0.485, 0.456, 0.406)) and s.info.norm == "given"
    assert s.info.view.crop_pct == 0.95 and s.info.view.interpolation == "bicubic"
    grey = create_dataset("digits", limit=40, input_size=32, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert grey.info.mean == pytest.approx((0.449,)) and grey.info.in_chans == 1  # a grey model: channel average
    with pytest.raises(ConfigError, match="both mean and std"):
        create_dataset("digits", mean=(0.5,))


@pytest.mark.parametrize("text,want", [("224", (None, 224, 224)), (224, (None, 224, 224)),
                                       ("3,224,224", (3, 224, 224)), ("160x224", (None, 160, 224)),
                                       ((1, 96, 96), (1, 96, 96)), (None, None)])
def test_parse_input_size(text, want):
    assert parse_input_size(text) == want


@pytest.mark.parametrize("bad", ["0", "a,b", "4,224,224", "1,2,3,4", ""])
def test_parse_input_size_refuses(bad):
    with pytest.raises(ConfigError, match="input size"):
        parse_input_size(bad)


def test_view_refuses_bad_settings():
    with pytest.raises(ConfigError, match="crop_pct"):
        View((224, 224), crop_pct=1.5)
    with pytest.raises(ConfigError, match="scale"):
        View((224, 224), scale=(0.5, 0.1))
    with pytest.raises(ConfigError, match="interpolation"):
        View((224, 224), interpolation="lanczos")
