"""Datasets read from local files (no downloads), augmentation and batching."""

from sss.data.datasets import DATASETS, load_dataset
from sss.data.image_folder import ImageFolder
from sss.data.loader import ArrayDataset, iterate_batches, split_validation

__all__ = ["DATASETS", "ArrayDataset", "ImageFolder", "iterate_batches", "load_dataset", "split_validation"]
