"""Accuracy counts used during training: clean and under an attack, kept on the device (summed over ranks
by the trainer, read once per evaluation)."""

from __future__ import annotations

import torch
from torch import nn

from attacks import Attack, model_mode

from ..accel import FLOAT32, Precision
from ..attacks_util import iterate_batches


@torch.no_grad()
def clean_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                  precision: Precision = FLOAT32) -> torch.Tensor:
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    with model_mode(model, training=False):
        for xb, yb in iterate_batches(x, y, batch_size):
            correct += (precision.forward(model, xb).argmax(1) == yb).sum()
    return correct


def robust_correct(attack: Attack, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    robust = torch.zeros((), dtype=torch.long, device=y.device)
    for xb, yb in iterate_batches(x, y, batch_size):
        robust += attack.run(xb, yb).adv_correct.sum()
    return robust
