"""The CCN paper's feature-normalization baselines (Table 9): `lrn` and `bn` after every conv.

Placement is unspecified by the paper; both go right after each convolution (before its
activation), SPEC §4.3 [I]. LRN uses AlexNet's constants k=2, n=5, alpha=1e-4, beta=0.75.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import nn

from workbench.errors import WorkbenchError

from .cross_entropy import SmoothingParams
from .registry import register_defense
from .softmax import Softmax
from .surgery import replace_all


def _after_each_conv(model: nn.Module, norm) -> nn.Module:
    if not replace_all(model, lambda m: isinstance(m, nn.Conv2d), lambda conv: nn.Sequential(conv, norm(conv))):
        raise WorkbenchError("this model has no convolutions to normalize")
    return model


class LRNParams(SmoothingParams):
    size: Annotated[int, Field(gt=0)] = 5
    alpha: Annotated[float, Field(gt=0)] = 1e-4
    beta: Annotated[float, Field(gt=0)] = 0.75
    k: Annotated[float, Field(gt=0)] = 2.0


@register_defense
class LocalResponseNorm(Softmax):
    name = "lrn"
    paper = "CCN [P4] Table 9 baseline: local response normalization (AlexNet) after each conv"
    Params = LRNParams

    def transform_model(self, model: nn.Module) -> nn.Module:
        p = self.params
        return _after_each_conv(model, lambda conv: nn.LocalResponseNorm(p.size, p.alpha, p.beta, p.k))


class BNParams(SmoothingParams):
    linear: bool = Field(False, description="also batch-normalize the hidden linear layers (not the classifier)")


@register_defense
class BatchNorm(Softmax):
    name = "bn"
    paper = "CCN [P4] Table 9 baseline: batch normalization after each conv"
    Params = BNParams

    def transform_model(self, model: nn.Module) -> nn.Module:
        _after_each_conv(model, lambda conv: nn.BatchNorm2d(conv.out_channels).to(conv.weight.device))
        if self.params.linear:
            hidden = [m for m in model.modules() if isinstance(m, nn.Linear)][:-1]
            replace_all(model, lambda m: any(m is h for h in hidden),
                        lambda lin: nn.Sequential(lin, nn.BatchNorm1d(lin.out_features).to(lin.weight.device)))
        return model
