"""Per-sample attack objectives, to be *maximised*.

Each takes logits (B, K), true labels y and optional targets t, and returns (B,).
`cw` (the Carlini-Wagner logit margin) and `dlr` (Croce & Hein's difference of logits
ratio) keep their gradients when softmax saturates, which starves cross-entropy.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from workbench.attack_meta import Param
from workbench.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]
ATTACK_LOSSES: Registry[LossFn] = Registry("attack loss")


def _other_max(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Largest logit among classes other than `labels` (masked with -inf, so negative logits work)."""
    masked = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return masked.max(dim=1).values


@ATTACK_LOSSES.register("ce")
def ce_loss(logits, y, target=None):
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


@ATTACK_LOSSES.register("cw")
def cw_loss(logits, y, target=None):
    if target is None:
        return _other_max(logits, y) - logits.gather(1, y[:, None]).squeeze(1)
    return logits.gather(1, target[:, None]).squeeze(1) - _other_max(logits, target)


@ATTACK_LOSSES.register("dlr")
def dlr_loss(logits, y, target=None):
    top = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    if target is None:
        return (_other_max(logits, y) - z_y) / (top[:, 0] - top[:, 2] + 1e-12)
    z_t = logits.gather(1, target[:, None]).squeeze(1)
    return (z_t - z_y) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12)


def loss_param(default: str = "ce") -> Param:
    """The `loss` parameter of a gradient attack's metadata, with the registered losses as its choices."""
    return Param("loss", str, default, "the loss the attack maximises", choices=tuple(ATTACK_LOSSES.names()),
                 option="loss")
