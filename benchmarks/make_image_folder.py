"""Write a dataset slimkit reads (Fashion-MNIST, digits, MNIST, CIFAR, .npz) as a class-per-folder PNG tree:

    OUT/train/<class>/<n>.png and OUT/test/<class>/<n>.png

which `--data OUT` (or `create_dataset("folder", OUT)`) reads back lazily. Used to build the real-resolution
end-to-end runs and the loader benchmark:

    python benchmarks/make_image_folder.py --data fashion-mnist --out /tmp/fm-folder --limit 6000 --test-limit 1000
    python benchmarks/make_image_folder.py --data fashion-mnist --out /tmp/fm256 --limit 3000 --size 256 --rgb

`--limit` / `--test-limit` keep class-balanced subsets (the first N/classes images of each class, in file order);
`--size` resizes on write (bicubic), `--rgb` writes 3-channel PNGs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

import slimkit.data  # noqa: F401  (registers the datasets)
from slimkit.registry import DATASETS


def _balanced(labels: np.ndarray, limit: int | None) -> np.ndarray:
    if limit is None:
        return np.arange(len(labels))
    classes = np.unique(labels)
    per = max(1, limit // len(classes))
    return np.sort(np.concatenate([np.flatnonzero(labels == c)[:per] for c in classes]))


def _folder_name(i: int, name: str) -> str:
    """A class folder name that sorts in label order and is safe on any filesystem."""
    return f"{i:03d}_{re.sub(r'[^A-Za-z0-9._-]+', '-', name).strip('-') or 'class'}"


def write_split(out: Path, images: np.ndarray, labels: np.ndarray, names: list[str], size: int | None,
                rgb: bool) -> int:
    from PIL import Image

    for i, name in enumerate(names):
        (out / _folder_name(i, name)).mkdir(parents=True, exist_ok=True)
    for n, (img, y) in enumerate(zip(images, labels, strict=True)):
        arr = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        im = Image.fromarray(np.ascontiguousarray(arr))
        if rgb and im.mode != "RGB":
            im = im.convert("RGB")
        if size is not None:
            im = im.resize((size, size), Image.Resampling.BICUBIC)
        im.save(out / _folder_name(int(y), names[int(y)]) / f"{n:06d}.png")
    return len(labels)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="fashion-mnist", help="dataset name (fashion-mnist, digits, mnist, cifar10, npz)")
    p.add_argument("--data-root", default=None, help="where the dataset's files are (default: its own location)")
    p.add_argument("--out", required=True, help="folder to write (train/ and test/ inside)")
    p.add_argument("--limit", type=int, default=None, help="class-balanced training images (default: all)")
    p.add_argument("--test-limit", type=int, default=None, help="class-balanced test images (default: all)")
    p.add_argument("--size", type=int, default=None, help="resize every image to SIZE x SIZE (default: native)")
    p.add_argument("--rgb", action="store_true", help="write 3-channel PNGs (grey repeated)")
    args = p.parse_args(argv)
    raw = DATASETS.create(args.data, root=args.data_root)
    xt, yt = raw.x_test, raw.y_test
    if xt is None:  # no test split of its own (digits): hold out every fifth image
        test = np.arange(len(raw.y_train)) % 5 == 0
        x, y, xt, yt = raw.x_train[~test], raw.y_train[~test], raw.x_train[test], raw.y_train[test]
    else:
        x, y = raw.x_train, raw.y_train
    out = Path(args.out)
    names = list(raw.class_names)
    tr, te = _balanced(y, args.limit), _balanced(yt, args.test_limit)
    n = write_split(out / "train", x[tr], y[tr], names, args.size, args.rgb)
    m = write_split(out / "test", xt[te], yt[te], names, args.size, args.rgb)
    print(f"wrote {n} training and {m} test images of {raw.name} to {out}/train and {out}/test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
