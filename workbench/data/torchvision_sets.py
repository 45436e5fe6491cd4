"""The standard torchvision image sets: read from disk, download only when allowed."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from ..errors import WorkbenchError
from .spec import DATASETS, DatasetSpec

# What a failed download can raise: URLError/HTTPError/socket and SSL errors are all
# OSError; torchvision wraps mirror failures and checksum mismatches in RuntimeError;
# a truncated archive fails in tarfile/zipfile.
_DOWNLOAD_ERRORS = (RuntimeError, OSError, ValueError, EOFError, tarfile.TarError, zipfile.BadZipFile)

_FIX = "Put the files there, or point --data-root / WORKBENCH_DATA at a folder that has them"

Raw = tuple[Tensor, Tensor]


def _short_reason(exc: BaseException) -> str:
    """One short line from an exception whose text may span many lines.

    torchvision's mirror error lists every attempt; its last line is the real cause.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    return reason if len(reason) <= 160 else reason[:157] + "..."


def _fetch(name: str, root: Path, expected: Path, download: bool, build: Callable[[bool], Raw]) -> Raw:
    """Load from disk; if the files are missing, download (when allowed) and retry once."""
    try:
        return build(False)
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        pass
    where = f"dataset {name!r} not found in {root} (expected {expected})"
    if not download:
        raise WorkbenchError(
            f"{where}; downloading is disabled (download=False or WORKBENCH_OFFLINE=1). "
            f"{_FIX}, or allow downloading"
        )
    try:
        return build(True)
    except _DOWNLOAD_ERRORS as exc:
        raise WorkbenchError(f"{where}; download failed: {_short_reason(exc)}. {_FIX}") from exc


def _tv(cls_name: str):
    """A torchvision dataset class, imported on first use (torchvision takes seconds to import)."""
    from torchvision import datasets

    return getattr(datasets, cls_name)


def _mnist_like(name: str, cls_name: str) -> Callable[[Path, str, bool], Raw]:
    def load(root: Path, split: str, download: bool) -> Raw:
        cls = _tv(cls_name)

        def build(dl: bool) -> Raw:
            ds = cls(str(root), train=split == "train", download=dl)
            return ds.data.unsqueeze(1).contiguous(), ds.targets.to(torch.int64)

        prefix = "train" if split == "train" else "t10k"
        expected = root / cls.__name__ / "raw" / f"{prefix}-images-idx3-ubyte"
        return _fetch(name, root, expected, download, build)

    return load


def _cifar(name: str, cls_name: str, train_file: str, test_file: str) -> Callable[[Path, str, bool], Raw]:
    def load(root: Path, split: str, download: bool) -> Raw:
        cls = _tv(cls_name)

        def build(dl: bool) -> Raw:
            ds = cls(str(root), train=split == "train", download=dl)
            # torchvision keeps CIFAR as a numpy N x H x W x C array.
            images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
            return images, torch.tensor(ds.targets, dtype=torch.int64)

        expected = root / cls.base_folder / (train_file if split == "train" else test_file)
        return _fetch(name, root, expected, download, build)

    return load


def _svhn(root: Path, split: str, download: bool) -> Raw:
    svhn = _tv("SVHN")

    def build(dl: bool) -> Raw:
        ds = svhn(str(root), split=split, download=dl)
        # Already N x C x H x W, and torchvision has mapped label 10 to digit 0.
        return torch.from_numpy(ds.data).contiguous(), torch.from_numpy(ds.labels).to(torch.int64)

    expected = root / svhn.split_list[split][1]
    return _fetch("svhn", root, expected, download, build)


def _register(name: str, loader: Callable[[Path, str, bool], Raw], **fields) -> None:
    DATASETS.register(name, DatasetSpec(name=name, loader=loader, **fields))


_GREY = dict(channels=1, num_classes=10, image_size=28, augment="none")
_COLOUR = dict(channels=3, image_size=32, augment="crop_flip")

_register(
    "mnist", _mnist_like("mnist", "MNIST"), mean=(0.1307,), std=(0.3081,),
    description="MNIST handwritten digits, 60k train / 10k test", **_GREY,
)
_register(
    "fashion_mnist", _mnist_like("fashion_mnist", "FashionMNIST"), mean=(0.2860,), std=(0.3530,),
    description="Fashion-MNIST clothing items, 60k train / 10k test", **_GREY,
)
_register(
    "kmnist", _mnist_like("kmnist", "KMNIST"), mean=(0.1918,), std=(0.3483,),
    description="Kuzushiji-MNIST cursive Japanese characters, 60k train / 10k test", **_GREY,
)
_register(
    "cifar10", _cifar("cifar10", "CIFAR10", "data_batch_1", "test_batch"), num_classes=10,
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
    description="CIFAR-10 colour objects, 50k train / 10k test", **_COLOUR,
)
_register(
    "cifar100", _cifar("cifar100", "CIFAR100", "train", "test"), num_classes=100,
    mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
    description="CIFAR-100 colour objects in 100 classes, 50k train / 10k test", **_COLOUR,
)
_register(
    "svhn", _svhn, num_classes=10,
    mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
    description="SVHN street-view house numbers, 73k train / 26k test", **_COLOUR,
)
