"""`brelu`: the CCN paper's Bounded-ReLU baseline [P4] (Zantedeschi et al.): every ReLU clipped to [0, bound]."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field
from torch import nn

from workbench.errors import WorkbenchError

from .cross_entropy import SmoothingParams
from .registry import register_defense
from .softmax import Softmax
from .surgery import replace_all


class BReLUParams(SmoothingParams):
    bound: Annotated[float, Field(gt=0)] = Field(1.0, description="upper clip of every ReLU")


@register_defense
class BoundedReLU(Softmax):
    name = "brelu"
    paper = "CCN [P4] baseline BReLU: activations clipped to [0, 1]"
    Params = BReLUParams

    def transform_model(self, model: nn.Module) -> nn.Module:
        # Replaces ReLU modules; models that apply ReLU functionally (the ResNets) cannot be bounded this way.
        if not replace_all(model, lambda m: type(m) is nn.ReLU, lambda m: nn.Hardtanh(0.0, self.params.bound)):
            raise WorkbenchError("this model has no nn.ReLU modules to bound "
                                 "(use small_cnn, lenet5, cnn3, madry_mnist, tiny or a vgg)")
        return model
