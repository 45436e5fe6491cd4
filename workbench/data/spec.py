"""What the workbench knows about a dataset, and the registry that holds them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from torch import Tensor

from ..registry import Registry

# A loader gets the resolved data root, a split ("train" | "test") and whether it may
# download, and returns raw uint8 images (N x C x H x W) with int64 labels.
Loader = Callable[[Path, str, bool], "tuple[Tensor, Tensor]"]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    channels: int
    num_classes: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str  # "none" | "crop_flip": which training augmentation suits the images
    description: str
    loader: Loader


DATASETS: Registry[DatasetSpec] = Registry("dataset")
