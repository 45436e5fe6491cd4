"""Tiny ImageNet from a local ImageFolder tree, decoded once and cached as tensors."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from ..errors import WorkbenchError
from .spec import DATASETS, DatasetSpec

SIZE = 64
_DIR = "tiny_imagenet"
_CACHE_FORMAT = 1  # bump when the cached layout changes, so old caches get rebuilt
_LAYOUT = f"<root>/{_DIR}/{{train,val}}/<class>/[<subfolders>/]<image>"


def _folder_samples(directory: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    """ImageFolder's file listing with a class map fixed from outside.

    val must use train's class indices even when it lacks some classes; ImageFolder
    would otherwise number val's own folders and silently mislabel them.
    """
    from torchvision.datasets import ImageFolder  # imported here: torchvision is slow to import

    class _Folder(ImageFolder):
        def find_classes(self, directory):
            return sorted(class_to_idx, key=class_to_idx.__getitem__), dict(class_to_idx)

    return _Folder(str(directory), allow_empty=True).samples


def _subdirs(path: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def _split_dir(base: Path, split: str) -> Path:
    names = ["train"] if split == "train" else ["val", "test"]
    for name in names:
        if (base / name).is_dir():
            return base / name
    raise WorkbenchError(
        f"dataset 'tiny_imagenet' not found: no folder {base / names[0]} "
        f"(expected layout {_LAYOUT}; 'test' may stand in for 'val'); it is not downloaded "
        "automatically. Put the files there, or point --data-root / WORKBENCH_DATA at a folder that has them"
    )


def _class_source(base: Path, folder: Path) -> Path:
    """Classes are numbered from train's folders so both splits agree on labels."""
    train = base / "train"
    return train if train.is_dir() else folder


def _samples(base: Path, folder: Path) -> list[tuple[str, int]]:
    """(path, label) pairs for every image of the split."""
    train = base / "train"
    class_source = _class_source(base, folder)
    classes = _subdirs(class_source)
    if not classes:
        raise WorkbenchError(f"dataset 'tiny_imagenet' has no class folders in {class_source} (expected layout {_LAYOUT})")
    class_to_idx = {c: i for i, c in enumerate(classes)}
    annotations = folder / "val_annotations.txt"

    if folder != train and annotations.is_file() and (folder / "images").is_dir():
        # The official download's val layout: one images/ folder plus a label file.
        samples = []
        for line in annotations.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in class_to_idx:
                raise WorkbenchError(f"{annotations} names class {parts[1]!r}, which has no folder in {class_source}")
            samples.append((str(folder / "images" / parts[0]), class_to_idx[parts[1]]))
        samples.sort()
    else:
        unknown = sorted(set(_subdirs(folder)) - set(class_to_idx))
        if unknown:
            raise WorkbenchError(
                f"{folder} has class folders missing from {class_source}: {', '.join(unknown[:5])}; "
                f"both splits must use the same classes (expected layout {_LAYOUT})"
            )
        samples = _folder_samples(folder, class_to_idx)

    if not samples:
        raise WorkbenchError(f"dataset 'tiny_imagenet' has no images in {folder} (expected layout {_LAYOUT})")
    return samples


def _newest_mtime(folders: list[Path]) -> float:
    """Latest change anywhere in the trees; a directory's own mtime misses nested edits."""
    newest = 0.0
    for top in dict.fromkeys(folders):
        newest = max(newest, top.stat().st_mtime)
        for dirpath, _, files in os.walk(top, followlinks=True):
            newest = max(newest, os.stat(dirpath).st_mtime)
            for name in files:
                newest = max(newest, os.stat(os.path.join(dirpath, name)).st_mtime)
    return newest


def _decode(path: str) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
            if img.size != (SIZE, SIZE):
                img = img.resize((SIZE, SIZE), Image.BILINEAR)
            return np.array(img, dtype=np.uint8)  # a writable copy: torch warns on read-only arrays
    except (UnidentifiedImageError, OSError) as exc:
        raise WorkbenchError(f"tiny_imagenet: cannot read image {path}: {exc}") from exc


def _build(samples: list[tuple[str, int]]) -> tuple[Tensor, Tensor]:
    images = torch.empty(len(samples), 3, SIZE, SIZE, dtype=torch.uint8)
    # PIL releases the GIL while decoding, so threads give a real speed-up here.
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for i, hwc in enumerate(pool.map(_decode, [p for p, _ in samples])):
            images[i] = torch.from_numpy(hwc).permute(2, 0, 1)
    labels = torch.tensor([label for _, label in samples], dtype=torch.int64)
    return images, labels


def _read_cache(cache: Path, newer_than: float) -> tuple[Tensor, Tensor] | None:
    if not cache.is_file() or cache.stat().st_mtime < newer_than:
        return None
    try:
        blob = torch.load(cache, weights_only=True)
        if int(blob["format"]) != _CACHE_FORMAT:
            return None
        return blob["images"], blob["labels"]
    except Exception:  # any unreadable or foreign file just means "rebuild"
        return None


def _write_cache(cache: Path, images: Tensor, labels: Tensor) -> None:
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    try:
        torch.save({"format": torch.tensor(_CACHE_FORMAT), "images": images, "labels": labels}, tmp)
        os.replace(tmp, cache)  # atomic, so a crash never leaves a half-written cache
    except OSError:
        tmp.unlink(missing_ok=True)  # read-only data folder: work without a cache


def _load(root: Path, split: str, download: bool) -> tuple[Tensor, Tensor]:
    del download  # there is no public mirror we can fetch from
    base = root / _DIR
    folder = _split_dir(base, split)
    # The cache sits beside the split folders, not inside them: writing it there would
    # bump the folder's mtime and make the cache look stale at once.
    cache = base / f".workbench-cache-{split}.pt"
    cached = _read_cache(cache, _newest_mtime([folder, _class_source(base, folder)]))
    if cached is not None:
        return cached
    images, labels = _build(_samples(base, folder))
    _write_cache(cache, images, labels)
    return images, labels


DATASETS.register(
    "tiny_imagenet",
    DatasetSpec(
        name="tiny_imagenet",
        channels=3,
        num_classes=200,  # nominal; the class list actually used comes from the folders
        image_size=SIZE,
        mean=(0.4802, 0.4481, 0.3975),
        std=(0.2770, 0.2691, 0.2821),
        augment="crop_flip",
        description="Tiny ImageNet 64x64, 200 classes, from a local ImageFolder tree (no download)",
        loader=_load,
    ),
)
