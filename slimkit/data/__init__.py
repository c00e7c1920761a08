"""Datasets: Fashion-MNIST / MNIST IDX, scikit-learn digits, CIFAR python batches, image folders, .npz arrays.

`create_dataset(name, root, input_size=...)` -> `DataSplits(train, val, test, info)`; `make_loaders(splits,
batch_size)`. Image folders are decoded lazily; transforms live in `slimkit.data.transforms`.
"""

from slimkit.data import sources as _sources  # noqa: F401  (registers the dataset builders)
from slimkit.data.datasets import (
    DatasetInfo,
    DataSplits,
    ImageDataset,
    Loaders,
    create_dataset,
    default_workers,
    list_datasets,
    make_loaders,
    stratified_split,
    with_index,
)
from slimkit.data.files import ImageFiles
from slimkit.data.idx import read_idx, write_idx
from slimkit.data.transforms import View, parse_input_size

__all__ = [
    "DatasetInfo",
    "DataSplits",
    "ImageDataset",
    "ImageFiles",
    "Loaders",
    "View",
    "create_dataset",
    "default_workers",
    "list_datasets",
    "make_loaders",
    "parse_input_size",
    "read_idx",
    "stratified_split",
    "with_index",
    "write_idx",
]
