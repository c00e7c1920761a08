"""Datasets: Fashion-MNIST / MNIST IDX, scikit-learn digits, CIFAR python batches, image folders, .npz arrays.

`create_dataset(name, root)` -> `DataSplits(train, val, test, info)`; `make_loaders(splits, batch_size)`.
"""

from slimkit.data import sources as _sources  # noqa: F401  (registers the dataset builders)
from slimkit.data.datasets import (
    DatasetInfo,
    DataSplits,
    ImageDataset,
    Loaders,
    create_dataset,
    list_datasets,
    make_loaders,
    stratified_split,
    with_index,
)
from slimkit.data.idx import read_idx, write_idx

__all__ = [
    "DatasetInfo",
    "DataSplits",
    "ImageDataset",
    "Loaders",
    "create_dataset",
    "list_datasets",
    "make_loaders",
    "read_idx",
    "stratified_split",
    "with_index",
    "write_idx",
]
