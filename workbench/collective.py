"""Collectives for data-parallel training (DDP); each is the identity when a single process trains.

The trainer uses them for metrics and evaluation counts; defenses use them where a loss or an update
depends on the whole batch rather than on each sample (class means, pairwise terms), so that N ranks
compute what one process would compute on the global batch.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def sum_(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over the ranks, in place (no host sync: on NCCL it is queued on the stream)."""
    if active():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather(t: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's `t` (same shape on every rank), in rank order."""
    if not active():
        return [t]
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return parts


def gather_objects(obj) -> list:
    """Every rank's `obj` (picklable), in rank order; [obj] for one process."""
    if not active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


class _GatherRows(torch.autograd.Function):
    """All ranks' rows concatenated in rank order, differentiable: the gradient of a row is summed over
    every rank's loss (each rank's loss may depend on every row) and returned to the rank that owns it."""

    @staticmethod
    def forward(ctx, t: torch.Tensor, sizes: tuple[int, ...]) -> torch.Tensor:
        r, cap = dist.get_rank(), max(sizes)
        padded = t.new_zeros((cap, *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded.contiguous())
        ctx.sizes, ctx.rank = sizes, r
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # gloo has no reduce-scatter: reduce all, keep own rows
        lo = sum(ctx.sizes[: ctx.rank])
        return grad[lo: lo + ctx.sizes[ctx.rank]], None


def gather_rows(t: torch.Tensor, sizes: Sequence[int] | None) -> tuple[torch.Tensor, int]:
    """(rows of every rank, offset of this rank's rows in them). `sizes` are the ranks' row counts, known to the
    caller (the trainer splits each global batch by a fixed rule), so no size exchange (and no host sync) is
    needed. Gradients flow back to each row's own rank. Single process: (t, 0)."""
    if not active() or sizes is None:
        return t, 0
    sizes = tuple(int(s) for s in sizes)
    if len(sizes) != dist.get_world_size() or sizes[dist.get_rank()] != t.shape[0]:
        raise ValueError(f"gather_rows: sizes {sizes} do not match this rank's {t.shape[0]} rows")
    offset = sum(sizes[: dist.get_rank()])
    if t.requires_grad:
        return _GatherRows.apply(t, sizes), offset
    with torch.no_grad():
        return _GatherRows.apply(t, sizes), offset
