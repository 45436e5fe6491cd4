"""`pc_loss`: Probabilistically Compact loss with logit constraints (PC-LC) [P2].

After T epochs of cross-entropy warm-up, the loss becomes PC + lambda * LC (no CE):
- PC (Eq. 6): for every false class k, max(0, p_k + xi - p_y); averaged over the K-1 false
  classes and the batch (the authors' code divides by K-1, the paper's formula does not: a 9x
  change of the PC:LC balance on 10 classes, SPEC §2.2; `pc_reduction: sum` gives the paper's).
- LC (Eq. 16): the logit gap max(0, a_y - a_j) to the most probable false class j, which the
  loss *penalizes* (a large gap is easy to melt). The code weights every false class by a
  softmax over the false logits ("soft", default); "hard" takes the argmax j as printed.
The switch from CE starts a fresh optimizer state, as the authors' phase-2 notebook does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from workbench.errors import WorkbenchError

from .base import BatchContext, Defense, LossOutput
from .registry import register_defense


class PCParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)

    xi: Annotated[float, Field(gt=0, le=1)] = Field(0.995, description="probability margin")
    lam: Annotated[float, Field(ge=0)] = Field(0.05, description="logit-constraint multiplier lambda")
    warmup_epochs: Annotated[int, Field(ge=0)] | None = Field(
        None, description="CE epochs before PC-LC (null: half the run, the paper's T + T)")
    lc: Literal["soft", "hard"] = Field("soft", description="false-class weighting of LC: code (soft) or paper (hard)")
    pc_reduction: Literal["mean", "sum"] = Field("mean", description="over false classes: code (mean) or paper (sum)")
    reset_optimizer: bool = Field(True, description="fresh optimizer state when PC-LC starts")


def pc_hinge(logits: torch.Tensor, y: torch.Tensor, xi: float, reduction: str = "mean") -> torch.Tensor:
    """Per-sample PC loss: sum (or mean) over false classes k of max(0, p_k + xi - p_y)."""
    p = F.softmax(logits.float(), dim=1)
    hinge = (p + xi - p.gather(1, y[:, None])).clamp_min(0).scatter(1, y[:, None], 0.0)
    total = hinge.sum(1)
    return total / (logits.shape[1] - 1) if reduction == "mean" else total


def logit_constraint(logits: torch.Tensor, y: torch.Tensor, mode: str = "soft") -> torch.Tensor:
    """Per-sample LC term: the (soft- or arg-)max-weighted positive gap a_y - a_k over false classes."""
    logits = logits.float()
    gap = (logits.gather(1, y[:, None]) - logits).clamp_min(0)
    false_logits = logits.scatter(1, y[:, None], float("-inf"))
    if mode == "hard":
        return gap.gather(1, false_logits.argmax(1, keepdim=True)).squeeze(1)
    return (F.softmax(false_logits, dim=1) * gap).sum(1)


@register_defense
class PCLoss(Defense):
    name = "pc_loss"
    paper = "Probabilistically Compact loss with logit constraints [P2] (Li et al., AAAI'21)"
    Params = PCParams

    def warmup(self, epochs: int) -> int:
        w = self.params.warmup_epochs
        return epochs // 2 if w is None else w

    def check_config(self, cfg) -> None:
        super().check_config(cfg)
        if self.warmup(cfg.epochs) >= cfg.epochs:
            raise WorkbenchError(f"warmup_epochs {self.warmup(cfg.epochs)} leaves no PC-LC epoch in a run of "
                                 f"{cfg.epochs} epochs (use null for half the run)")

    def phase(self, epoch: int, epochs: int, history: Sequence[dict] = ()) -> str:
        return "warmup" if epoch < self.warmup(epochs) else "pc_lc"

    def reset_optimizer_at(self, epoch: int, epochs: int, history: Sequence[dict] = ()) -> bool:
        return self.params.reset_optimizer and 0 < epoch == self.warmup(epochs)

    def per_sample(self, logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        return pc_hinge(logits, y, p.xi, p.pc_reduction), logit_constraint(logits, y, p.lc)

    def training_loss(self, model, x, y, ctx: BatchContext) -> LossOutput:
        logits = model(x)
        if self.batch_phase(ctx) == "warmup":
            return LossOutput(F.cross_entropy(logits, y), logits)
        pc, lc = self.per_sample(logits, y)
        pc, lc = pc.mean(), lc.mean()
        return LossOutput(pc + self.params.lam * lc, logits, {"pc": pc, "lc": lc})

    def attack_loss(self):
        def pc_lc(model, x, y):
            logits = model(x)
            pc, lc = self.per_sample(logits, y)
            return pc + self.params.lam * lc, logits

        return pc_lc
