"""The images a trial trains on: built-in, published and image-folder sources as one in-memory ``Dataset``.

Example:
    >>> from attnsearch.candidate import DataSpec
    >>> ds = load_dataset(DataSpec(dataset="shapes", image_size=16, train_size=40, val_size=20))
    >>> ds.classes[:3], ds.train_x.dtype
    (('circle', 'square', 'triangle'), torch.uint8)
"""

from __future__ import annotations

from .dataset import Dataset
from .sources import DATASETS, check_data, load_dataset

__all__ = ["DATASETS", "Dataset", "check_data", "load_dataset"]
