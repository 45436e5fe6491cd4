"""`softmax`: plain cross-entropy training, the baseline of every paper."""

import torch.nn.functional as F

from .base import BatchContext, Defense, LossOutput
from .registry import register_defense


@register_defense
class Softmax(Defense):
    name = "softmax"
    paper = "baseline (SM) in all five papers"

    def training_loss(self, model, x, y, ctx: BatchContext) -> LossOutput:
        logits = model(x)
        return LossOutput(F.cross_entropy(logits, y), logits)
