"""A data loader that keeps the whole dataset on the training device.

MNIST- and CIFAR-size datasets fit on any device as uint8; batches are sliced from a
per-epoch permutation there, converted to float [0, 1] and augmented in batch, with no
per-sample Python and no host-to-device copy per batch.
"""

from __future__ import annotations

from typing import Iterator

import torch

from . import augment as aug


class DeviceLoader:
    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        device: torch.device | str = "cpu",
        shuffle: bool = True,
        augment: str = "none",
        pad: int = 4,
        shard: tuple[int, int] = (0, 1),
    ):
        if augment not in aug.AUGMENTS:
            raise ValueError(f"augment must be one of {aug.AUGMENTS}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.pad = pad
        # (rank, world) under DDP: every rank holds the split and draws the same epoch (order, augmentation),
        # then takes every world-th sample of each global batch from its rank on: the ranks together see
        # exactly the batches one process would, and the first k samples of each rank's share (those the
        # adversary perturbs) are together the first ~k*world of the global batch, as in one process.
        self.rank, self.world = shard

    def __len__(self) -> int:
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def batch_sizes(self, b: int) -> tuple[int, ...]:
        """Every rank's number of samples in global batch `b`."""
        n = min((b + 1) * self.batch_size, len(self.labels)) - b * self.batch_size
        return tuple(len(range(r, n, self.world)) for r in range(self.world))

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        # One kernel: uint8 / float promotes to float32 (== x.float() / 255 exactly).
        return torch.div(x, 255.0) if x.dtype == torch.uint8 else x.float()

    def epoch(self, generator: torch.Generator | None = None, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of one epoch; `start` skips batches already done (resume mid-epoch).

        All of the epoch's randomness is drawn up front from `generator` (a CPU generator),
        so the same generator state always gives the same epoch.
        """
        n = len(self.labels)
        if self.shuffle:
            if generator is None:
                raise ValueError("a shuffling loader needs a generator")
            order = torch.randperm(n, generator=generator).to(self.device)
        else:
            order = None
        params = {}
        if self.augment != "none":
            if generator is None:
                raise ValueError("augmentation needs a generator")
            params = {k: v.to(self.device) for k, v in aug.draw_params(n, self.augment, self.pad, generator).items()}
        share = slice(self.rank, None, self.world)
        for b in range(start, len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            idx = order[lo:hi][share] if order is not None else torch.arange(lo, hi, device=self.device)[share]
            x = self._to_float(self.images[idx])
            if params:
                x = aug.apply(x, {k: v[lo:hi][share] for k, v in params.items()}, self.pad)
            yield x, self.labels[idx]
