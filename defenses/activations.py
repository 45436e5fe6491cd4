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

# Containers whose forward is a plain composition of their children.
_PLAIN = {"TapNet", "Normalize", "PerImageStandardize"}


class BReLUParams(SmoothingParams):
    bound: Annotated[float, Field(gt=0)] = Field(1.0, description="upper clip of every ReLU")


@register_defense
class BoundedReLU(Softmax):
    name = "brelu"
    paper = "CCN [P4] baseline BReLU: activations clipped to [0, 1]"
    Params = BReLUParams

    def transform_model(self, model: nn.Module) -> nn.Module:
        # Only ReLU *modules* can be swapped; a block with its own forward (the ResNets' residual units)
        # may apply F.relu inside, which would silently stay unbounded.
        blocks = sorted({type(m).__name__ for m in model.modules()
                         if not type(m).__module__.startswith("torch.") and type(m).__name__ not in _PLAIN})
        if blocks:
            raise WorkbenchError(f"cannot bound every activation: this model's {', '.join(blocks)} blocks apply "
                                 "theirs inside their own code (use small_cnn, lenet5, cnn3, madry_mnist, tiny or a vgg)")
        if not replace_all(model, lambda m: type(m) is nn.ReLU, lambda m: nn.Hardtanh(0.0, self.params.bound)):
            raise WorkbenchError("this model has no nn.ReLU modules to bound "
                                 "(use small_cnn, lenet5, cnn3, madry_mnist, tiny or a vgg)")
        return model
