"""scikit-learn's bundled 8x8 digits: a tiny set that needs no download, for quick runs and tests."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .spec import DATASETS, DatasetSpec

_TEST_FRACTION = 0.2
_SEED = 0


@lru_cache(maxsize=1)
def _split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # sklearn is slow to import; only pay when used

    bunch = load_digits()
    # Pixels are counts 0..16; stretch them to the usual 0..255 byte range.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    labels = bunch.target.astype(np.int64)

    # Our own stratified split with numpy's legacy RandomState, whose stream is frozen,
    # so train/test stay identical across runs, machines and library versions.
    rng = np.random.RandomState(_SEED)
    test_idx = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        rng.shuffle(members)
        test_idx.append(members[: int(round(len(members) * _TEST_FRACTION))])
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[np.concatenate(test_idx)] = True
    return images[~is_test], labels[~is_test], images[is_test], labels[is_test]


def _load(root: Path, split: str, download: bool) -> tuple[Tensor, Tensor]:
    del root, download  # bundled with scikit-learn: nothing on disk to find or fetch
    train_x, train_y, test_x, test_y = _split()
    x, y = (train_x, train_y) if split == "train" else (test_x, test_y)
    # Copies, so a caller editing the tensors in place cannot corrupt the cached split.
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


DATASETS.register(
    "digits",
    DatasetSpec(
        name="digits",
        channels=1,
        num_classes=10,
        image_size=8,
        # Measured over all 1797 images after scaling to [0, 1].
        mean=(0.3053,),
        std=(0.3759,),
        augment="none",
        description="scikit-learn 8x8 handwritten digits (bundled, no download), fixed 80/20 split",
        loader=_load,
    ),
)
