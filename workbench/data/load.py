"""The one entry point the rest of the workbench uses to get a dataset split."""

from __future__ import annotations

import os

import torch
from torch import Tensor

from ..errors import WorkbenchError
from .root import download_allowed, resolve_data_root
from .spec import DATASETS

SPLITS = ("train", "test")


def load_raw(
    name: str,
    split: str = "test",
    root: str | os.PathLike[str] | None = None,
    download: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Images as uint8 N x C x H x W and labels as int64 N, exactly as stored."""
    spec = DATASETS.get(name)  # unknown names fail here, listing the choices
    if split not in SPLITS:
        raise WorkbenchError(f"unknown split {split!r} for dataset {name!r}; choose one of: {', '.join(SPLITS)}")
    images, labels = spec.loader(resolve_data_root(root), split, download_allowed(download))
    return images, labels.to(torch.int64)


def load_data(
    name: str,
    split: str = "test",
    root: str | os.PathLike[str] | None = None,
    download: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Images as float32 in [0, 1] (not normalised: models carry their own mean/std)."""
    images, labels = load_raw(name, split, root=root, download=download)
    return images.to(torch.float32).div_(255.0), labels
