"""Accuracy measurements used during training: clean accuracy and robust accuracy under an attack."""

from __future__ import annotations

import torch
from torch import nn

from attacks import Attack

from ..attacks_util import iterate_batches


@torch.no_grad()
def clean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=y.device)
    for xb, yb in iterate_batches(x, y, batch_size):
        correct += (model(xb).argmax(1) == yb).sum()
    model.train(was_training)
    return int(correct) / max(len(y), 1)


def robust_accuracy(attack: Attack, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    robust = torch.zeros((), dtype=torch.long, device=y.device)
    for xb, yb in iterate_batches(x, y, batch_size):
        robust += attack.run(xb, yb).adv_correct.sum()
    return int(robust) / max(len(y), 1)
