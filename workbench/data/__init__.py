"""Datasets: where they live, how they load, and the registry of known sets."""

from . import digits, tiny_imagenet, torchvision_sets  # noqa: F401  (register the datasets)
from .load import load_data, load_raw
from .loader import DeviceLoader
from .root import download_allowed, resolve_data_root
from .spec import DATASETS, DatasetSpec

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DeviceLoader",
    "download_allowed",
    "load_data",
    "load_raw",
    "resolve_data_root",
]
