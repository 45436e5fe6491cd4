"""Batched augmentation on the device: random crop with zero padding and horizontal flip.

Per-sample parameters are drawn for a whole epoch at once from the loader's generator,
so an epoch's augmentation is reproducible and resumable from one generator state.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "crop", "crop_flip")


def draw_params(n: int, kind: str, pad: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    params: dict[str, torch.Tensor] = {}
    if kind in ("crop", "crop_flip"):
        params["dy"] = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        params["dx"] = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    if kind == "crop_flip":
        params["flip"] = torch.rand(n, generator=generator) < 0.5
    return params


def apply(x: torch.Tensor, params: dict[str, torch.Tensor], pad: int) -> torch.Tensor:
    """Augment a batch (B, C, H, W) with its per-sample parameters (already on x's device)."""
    if "dy" in params:
        b, _, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = (params["dy"][:, None] + torch.arange(h, device=x.device)[None, :])  # (B, H)
        cols = (params["dx"][:, None] + torch.arange(w, device=x.device)[None, :])  # (B, W)
        bidx = torch.arange(b, device=x.device)[:, None, None]
        # Advanced indexing gathers every crop in one kernel: result (B, H, W, C) -> (B, C, H, W).
        x = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if "flip" in params:
        x = torch.where(params["flip"][:, None, None, None], x.flip(3), x)
    return x
