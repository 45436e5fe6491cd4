"""Small tensor helpers shared by training and evaluation."""

from __future__ import annotations

from typing import Iterator

import torch


def iterate_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Consecutive batches; uint8 images become float [0, 1] one batch at a time."""
    for lo in range(0, len(y), batch_size):
        xb = x[lo:lo + batch_size]
        if xb.dtype == torch.uint8:
            xb = torch.div(xb, 255.0)
        yield xb, y[lo:lo + batch_size]
