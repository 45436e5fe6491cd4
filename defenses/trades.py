"""`trades`: TRADES (Zhang et al. 2019), CE(f(x), y) + beta * KL(f(x) || f(x')) with x' maximizing the KL.

The inner maximization follows the reference code: start at x + 0.001 * N(0, 1), `steps` signed
gradient steps on the summed KL in eval mode (dropout off), each projected onto the L-inf ball
and [0, 1]. The KL of the outer loss is summed over classes and averaged over the batch.
Defaults are the MNIST settings (eps 0.3, 40 steps of 0.01); beta 6 is the CIFAR value,
`trades_mnist` uses the MNIST beta of 1.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from attacks import model_mode, project_linf

from .base import BatchContext, Defense, LossOutput
from .registry import register_defense


class TradesParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    beta: Annotated[float, Field(gt=0)] = Field(6.0, description="weight of the robust KL term")
    eps: Annotated[float, Field(gt=0, le=1)] = 0.3
    steps: Annotated[int, Field(gt=0)] = 40
    step_size: Annotated[float, Field(gt=0)] = 0.01
    init_std: Annotated[float, Field(ge=0)] = Field(0.001, description="std of the Gaussian start around x")


def kl_divergence(logits_adv: torch.Tensor, logits_clean: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(softmax(logits_clean) || softmax(logits_adv)), from log-probabilities on both sides:
    a clean probability that underflows to 0 then gives a zero gradient, not nan (xlogy at 0)."""
    return F.kl_div(F.log_softmax(logits_adv.float(), dim=1), F.log_softmax(logits_clean.float(), dim=1),
                    reduction="none", log_target=True).sum(1)


@register_defense
class Trades(Defense):
    name = "trades"
    paper = "TRADES (Zhang et al., ICML'19): the ADR paper's other adversary, a standard AT baseline"
    Params = TradesParams
    crafts_adversarial = True

    def craft(self, model, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        with model_mode(model, training=False):
            with torch.no_grad():
                logits_clean = model(x)
            x_adv = (x + p.init_std * torch.randn_like(x)).detach()
            for _ in range(p.steps):
                x_adv.requires_grad_(True)
                loss = kl_divergence(model(x_adv), logits_clean).sum()
                (grad,) = torch.autograd.grad(loss, x_adv)  # input gradient only: no parameter grads
                x_adv = x_adv.detach() + p.step_size * grad.sign()
                x_adv = project_linf(x_adv, x, p.eps)
        return x_adv.detach()

    def training_loss(self, model, x, y, ctx: BatchContext) -> LossOutput:
        x_adv = self.craft(model, x)
        logits = model(x)
        ce = F.cross_entropy(logits, y)
        kl = kl_divergence(model(x_adv), logits).mean()
        return LossOutput(ce + self.params.beta * kl, logits, {"ce": ce, "kl": kl})
