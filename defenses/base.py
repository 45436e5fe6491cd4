"""The defense plug-in shape.

A defense can (a) transform the model, (b) compute the training loss of a batch,
(c) offer its own loss to attacks for adaptive evaluation, and (d) declare its
hyperparameters (a pydantic model, `Params`) with defaults for the profile schema.
The trainer treats every defense alike through this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from workbench.errors import WorkbenchError


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


@dataclass
class BatchContext:
    """What a defense may need beyond the batch itself."""

    epoch: int  # 0-based epoch in progress
    epochs: int
    step: int  # global step
    is_adversarial: torch.Tensor | None = None  # bool mask over the batch, from the adv_train block
    # Under DDP: every rank's number of rows in this step's training batch (this rank holds one share of the
    # global batch). Losses over pairs of the batch gather the other ranks' rows with it; None: one process.
    rank_sizes: tuple[int, ...] | None = None
    # The epoch's phase as the trainer decided it (`Defense.phase` with the run's epoch records); None outside
    # a run: the defense decides from the epoch alone.
    phase: str | None = None


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar to minimise
    logits: torch.Tensor  # final logits of the batch, for training accuracy
    parts: dict[str, torch.Tensor] = field(default_factory=dict)  # named loss terms, logged as metrics


# An attack loss: (model, x, y) -> per-sample loss to *maximise*.
AttackLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


class Defense(ABC):
    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    # True when training_loss crafts its own adversarial examples (TRADES): the adv_train block must be off.
    crafts_adversarial: ClassVar[bool] = False

    def __init__(self, params: BaseModel, num_classes: int):
        self.params = params
        self.num_classes = num_classes

    @classmethod
    def from_config(cls, params: dict, num_classes: int) -> Defense:
        return cls(cls.Params.model_validate(params), num_classes)

    def transform_model(self, model: nn.Module) -> nn.Module:
        """(a) Change the architecture (e.g. compact layers). Must be deterministic: loading re-applies it."""
        return model

    def attach(self, model: nn.Module, input_shape: tuple[int, ...]) -> nn.Module | None:
        """Build the trainable state that lives beside `model` (auxiliary heads, prototypes, centers), sized
        from the model's taps on inputs of `input_shape` (C, H, W) and on the model's device. It is saved in
        checkpoints as "auxiliary" and never used at inference. Its parameters are trained by the run's
        optimizer, except those in `self_updated()`. Called once per run, after `transform_model`."""
        return None

    def self_updated(self) -> list[nn.Parameter]:
        """Auxiliary parameters the defense updates itself in `after_step` (prototypes on their own
        optimizer, centers by their update rule): the run's optimizer leaves them alone."""
        return []

    def after_step(self, ctx: BatchContext) -> None:
        """Called after each optimizer step, with the gradients of the batch's loss still in place."""

    def state_dict(self) -> dict:
        """State of the defense's own optimizers, for exact resume (checkpointed as "defense_state")."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @abstractmethod
    def training_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, ctx: BatchContext) -> LossOutput:
        """(b) The loss of one training batch."""

    def attack_loss(self) -> AttackLoss | None:
        """(c) The defense's own objective, for adaptive attacks; None if it is plain cross-entropy."""
        return None

    def check_config(self, cfg) -> None:
        """Raise `WorkbenchError` (one line) if this defense cannot do what the run config asks (profile load)."""
        if self.crafts_adversarial and cfg.adv_train.enabled:
            raise WorkbenchError(f"defense {self.name!r} crafts its own adversarial examples; set adv_train.attack: none")

    def phase(self, epoch: int, epochs: int, history: Sequence[dict] = ()) -> str:
        """The training phase of 0-based `epoch` (e.g. "warmup" then "pc"); logged in every epoch record.
        `history` holds the run's epoch records so far; a phase may depend only on the records of the epochs
        before `epoch` (a gate on the warm-up's accuracy), so a resumed run, whose checkpoint carries them,
        replays the same phases."""
        return "main"

    def batch_phase(self, ctx: BatchContext) -> str:
        """The phase of the batch's epoch: the trainer's decision, or from the epoch alone outside a run."""
        return ctx.phase if ctx.phase is not None else self.phase(ctx.epoch, ctx.epochs)

    def reset_optimizer_at(self, epoch: int, epochs: int, history: Sequence[dict] = ()) -> bool:
        """True if the optimizer state starts fresh at the beginning of `epoch` (a new phase, as the papers'
        phase-2 scripts do). A function of the epoch and the earlier epochs' records, as `phase`, so resuming
        replays it."""
        return False

    def trains_like(self, other: "Defense", epoch: int, epochs: int, other_epochs: int,
                    history: Sequence[dict] = ()) -> bool:
        """Whether this defense, in a run of `epochs`, trains 0-based `epoch` exactly as `other` does in a run of
        `other_epochs` (both after the epoch records `history`), leaving its own state as `other` leaves its own:
        a run may then start from the other's state (a suite's fork). By default only the same defense with the
        same parameters in a run of the same length does (the loss may read the epoch and the run's length)."""
        return self.name == other.name and self.params == other.params and epochs == other_epochs

    def check_epoch(self, record: dict, history: list[dict]) -> str | None:
        """A one-line reason to stop the run if this epoch's record shows the defense broke training (e.g. a
        collapse to chance), given the earlier epochs' records; None if it looks healthy."""
        return None

    def check_step(self, record: dict, history: list[dict]) -> str | None:
        """As `check_epoch`, at each log point within an epoch: `record` is the step record (means over the
        steps since the previous one, loss parts as `loss_<part>`), `history` the finished epochs' records.
        It catches a break in a run's first epoch, which `check_epoch` only sees at its end."""
        return None

    def epoch_metrics(self, model: nn.Module) -> dict[str, float]:
        """Scalars of the defense's state to log after each epoch (learned scales, prototype norms)."""
        return {}
