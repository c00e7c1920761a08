import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from slimkit.data import ImageFiles, create_dataset, default_workers, make_loaders
from slimkit.data.transforms import View, eval_view
from slimkit.errors import CorruptDataError


def _folder(root, grey_only=False, n=4, size=(20, 26)):
    """train/ and test/ class folders; class 'a' grey PNGs, class 'b' RGB ones unless `grey_only`."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                shape = size if grey_only or cls == "a" else (*size, 3)
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


def test_folder_is_decoded_lazily_and_rgb_when_any_image_is(tmp_path):
    s = create_dataset(str(_folder(tmp_path)), val_fraction=0.0, input_size=32, augment=False)
    assert isinstance(s.train.images, ImageFiles) and s.train.images.mode == "RGB"  # paths, no pixels in memory
    assert s.info.in_chans == 3 and s.info.source_chans == 3 and len(s.train) == 8 and len(s.test) == 8
    # a grey file of an RGB folder: decoded as RGB (grey repeated), then resized and centre-cropped
    path = s.test.images.paths[0]
    assert "/a/" in path
    grey = torch.from_numpy(np.array(Image.open(path))).expand(3, -1, -1)
    ref = eval_view(grey, View((32, 32))).float() / 255.0
    mean, std = torch.tensor(s.info.mean).view(3, 1, 1), torch.tensor(s.info.std).view(3, 1, 1)
    assert torch.allclose(s.test[0][0], (ref - mean) / std, atol=1e-5)
    rgb_path = s.test.images.paths[-1]
    rgb = torch.from_numpy(np.array(Image.open(rgb_path))).permute(2, 0, 1)
    assert torch.allclose(s.test[len(s.test) - 1][0], (eval_view(rgb, View((32, 32))).float() / 255 - mean) / std,
                          atol=1e-5)


def test_grey_folder_stays_grey_or_is_repeated_for_a_three_channel_model(tmp_path):
    root = _folder(tmp_path, grey_only=True)
    s = create_dataset(str(root), val_fraction=0.0, input_size=24)
    assert s.train.images.mode == "L" and s.info.in_chans == 1 and s.train[0][0].shape == (1, 24, 24)
    s3 = create_dataset(str(root), val_fraction=0.0, input_size="3,24,24")
    x = s3.train[0][0]
    assert s3.info.in_chans == 3 and s3.info.source_chans == 1 and x.shape == (3, 24, 24)
    assert torch.equal(x[0], x[2])
    # statistics of a lazy folder: every training image decoded once (fewer than STATS_SAMPLE here)
    pix = np.stack([np.asarray(Image.open(p)) for p in s.train.images.paths]).astype(np.float64) / 255
    assert s.info.mean[0] == pytest.approx(pix.mean(), rel=1e-5) and s.info.std[0] == pytest.approx(pix.std(), rel=1e-3)


def test_sixteen_bit_images_are_scaled_to_eight_bits_not_clipped(tmp_path):
    """A 16-bit grey PNG (0..65535) reads as its 8-bit image (v / 257), alone or in an RGB folder; PIL's convert
    would clip it at 255 (an all-white dataset)."""
    root = _folder(tmp_path, n=1)
    deep = (np.arange(20 * 26, dtype=np.uint16).reshape(20, 26) * 120)  # 0 .. 62280
    Image.fromarray(deep).save(root / "train" / "a" / "deep.png")
    want = np.round(deep / 257.0).astype(np.uint8)
    s = create_dataset(str(root), val_fraction=0.0, augment=False)  # native size, RGB folder
    i = next(i for i, p in enumerate(s.train.images.paths) if p.endswith("deep.png"))
    got = s.train.images.load(i)
    assert got.shape == (3, 20, 26) and all(np.array_equal(got[c].numpy(), want) for c in range(3))
    grey = ImageFiles(np.array([str(root / "train" / "a" / "deep.png")]), np.array([[20, 26]]), "L")
    assert np.array_equal(grey.load(0)[0].numpy(), want)


def test_native_size_folder_resizes_to_the_first_image(tmp_path):
    root = _folder(tmp_path, n=2)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "train" / "b" / "odd.png")
    s = create_dataset(str(root), val_fraction=0.0, augment=False)
    assert s.info.image_size == (20, 26) and s.info.view is None
    assert all(s.train[i][0].shape == (3, 20, 26) for i in range(len(s.train)))


def test_corrupt_files_are_named_up_front_and_when_decoded(tmp_path):
    root = _folder(tmp_path, n=2)
    (root / "train" / "b" / "junk.png").write_bytes(b"not a png at all")
    with pytest.raises(CorruptDataError, match="junk.png"):  # header check when the dataset is built
        create_dataset(str(root), input_size=16)
    (root / "train" / "b" / "junk.png").unlink()
    good = (root / "train" / "b" / "0.png").read_bytes()
    (root / "train" / "b" / "0.png").write_bytes(good[: len(good) // 2])  # valid header, truncated pixels
    with pytest.raises(CorruptDataError, match="0.png"):  # found by the statistics pass, which decodes
        create_dataset(str(root), input_size=16)
    s = create_dataset(str(root), val_fraction=0.0, input_size=16, augment=False, mean=(0.5,), std=(0.25,))
    i = [k for k, p in enumerate(s.train.images.paths) if p.endswith("b/0.png")][0]
    with pytest.raises(CorruptDataError, match="0.png"):
        s.train[i]
    loader = DataLoader(s.train, batch_size=len(s.train), num_workers=1)
    with pytest.raises(CorruptDataError, match="0.png"):  # raised in a worker process: type and file kept
        next(iter(loader))


def _batches(loader, epochs):
    out = []
    for e in epochs:
        loader.dataset.set_epoch(e)
        out.append([(x.clone(), y.clone()) for x, y in loader])
    return out


def test_same_batches_with_and_without_workers_across_epochs(tmp_path):
    s = create_dataset(str(_folder(tmp_path, n=6)), val_fraction=0.0, input_size=16, flip=True)
    assert default_workers(s.train) >= 1 and default_workers(create_dataset("digits").train) == 0

    def loader(workers, persistent=False, shuffle=True):
        return DataLoader(s.train, batch_size=5, shuffle=shuffle, generator=torch.Generator().manual_seed(0),
                          num_workers=workers, persistent_workers=persistent)

    def same(a, b):
        for a_epoch, b_epoch in zip(a, b, strict=True):
            for (ax, ay), (bx, by) in zip(a_epoch, b_epoch, strict=True):
                assert torch.equal(ax, bx) and torch.equal(ay, by)

    epochs = [0, 1, 0]
    ref = _batches(loader(0), epochs)
    assert not torch.equal(ref[0][0][0], ref[1][0][0])
    same(ref, _batches(loader(2), epochs))
    # persistent workers are not rebuilt between epochs: set_epoch must still reach them (same sample order here,
    # as a persistent loader draws its shuffle differently from a fresh one)
    ordered = _batches(loader(0, shuffle=False), epochs)
    assert not torch.equal(ordered[0][0][0], ordered[1][0][0])
    same(ordered, _batches(loader(2, persistent=True, shuffle=False), epochs))
    # the loaders slimkit builds: workers by default for decoded images, same batches as with none
    auto = make_loaders(s, batch_size=4, seed=3)
    none = make_loaders(s, batch_size=4, seed=3, num_workers=0)
    assert auto.train.num_workers >= 1 and none.train.num_workers == 0
    for (ax, ay), (nx, ny) in zip(auto.test, none.test, strict=True):
        assert torch.equal(ax, nx) and torch.equal(ay, ny)


def test_files_fingerprint_follows_names_and_sizes(tmp_path):
    root = _folder(tmp_path, n=2)
    a = create_dataset(str(root), input_size=16).train.images.fingerprint()
    assert a == create_dataset(str(root), input_size=16).train.images.fingerprint()
    Image.fromarray(np.zeros((3, 3), np.uint8)).save(root / "train" / "a" / "0.png")
    assert a != create_dataset(str(root), input_size=16).train.images.fingerprint()
