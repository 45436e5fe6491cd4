"""`softmax` (SM): plain cross-entropy, the baseline of every paper; `label_smoothing` (LS): soft labels."""

from typing import Annotated

from pydantic import Field

from .base import BatchContext, Defense, LossOutput
from .cross_entropy import SmoothingParams, soft_cross_entropy
from .registry import register_defense


@register_defense
class Softmax(Defense):
    name = "softmax"
    paper = "baseline (SM) in all five papers"
    Params = SmoothingParams

    def training_loss(self, model, x, y, ctx: BatchContext) -> LossOutput:
        logits = model(x)
        return LossOutput(soft_cross_entropy(logits, y, self.params.smoothing), logits)


class _LSParams(SmoothingParams):
    smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1


@register_defense
class LabelSmoothing(Softmax):
    name = "label_smoothing"
    paper = "CCN [P4] baseline LS (Warde-Farley & Goodfellow): soft labels {1/90, 0.9}"
    Params = _LSParams
