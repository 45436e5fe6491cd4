"""Cross-entropy with the soft labels of the CCN paper's label smoothing (LS)."""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field


class SmoothingParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    # s = 0.1 gives the CCN paper's {1/90, 0.9} targets on 10 classes.
    smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = Field(
        0.0, description="label smoothing s: target 1-s on the true class, s/(K-1) on each other")


def soft_cross_entropy(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mean cross-entropy against targets 1-s (true class) and s/(K-1) (others).

    Not torch's `label_smoothing`, which spreads s over all K classes (0.91 / 0.01 for s=0.1).
    """
    if smoothing == 0:
        return F.cross_entropy(logits, y)
    k = logits.shape[1]
    target = torch.full_like(logits, smoothing / (k - 1), dtype=torch.float32)
    target.scatter_(1, y[:, None], 1.0 - smoothing)
    return F.cross_entropy(logits.float(), target)
