"""The attack base class: construction, the call contract and the result object.

An attack is built with the model and its hyper-parameters and called on (x, y) with
x in [0, 1]; it returns x_adv inside its norm ball and [0, 1]. It runs the model in
eval mode (configurable) and restores every module's mode afterwards; it takes
gradients with respect to the input only, so parameter `.grad` is never touched.
Randomness comes from the attack's own `torch.Generator`, seeded from its settings.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator

import torch
from torch import nn

from .losses import ATTACK_LOSSES

# A custom (adaptive) objective: (model, x, y) -> per-sample loss to maximise.
ModelLoss = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@contextmanager
def model_mode(model: nn.Module, training: bool) -> Iterator[None]:
    """Put every submodule in train/eval mode, then restore each one's own flag."""
    saved = [(m, m.training) for m in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def as_eps(eps: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """eps as a tensor broadcastable to `like` (a float, or one value per sample)."""
    e = torch.as_tensor(eps, dtype=like.dtype, device=like.device)
    return e.view(-1, *([1] * (like.dim() - 1))) if e.dim() == 1 else e


def check_eps(eps: float | torch.Tensor) -> None:
    values = eps.flatten().tolist() if isinstance(eps, torch.Tensor) else [eps]
    for v in values:
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {v!r}")


@dataclass
class AttackResult:
    x_adv: torch.Tensor
    clean_correct: torch.Tensor  # bool (B,): the model classifies the clean input correctly
    adv_correct: torch.Tensor  # bool (B,): ...and still does on x_adv (robust)
    success: torch.Tensor  # bool (B,): the attack's goal is met on x_adv (misclassified / hits target)
    norm: torch.Tensor  # (B,) perturbation size in the attack's norm
    restart: torch.Tensor  # int (B,): restart that produced x_adv (-1: none succeeded)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def robust_accuracy(self) -> float:
        return float(self.adv_correct.float().mean())

    @property
    def clean_accuracy(self) -> float:
        return float(self.clean_correct.float().mean())


class Attack(ABC):
    """Base of every attack. Subclasses implement `perturb`."""

    name: ClassVar[str] = ""
    norm: ClassVar[str] = "linf"
    # Input checks read values back from the device; trusted hot loops (training) turn them off.
    validate_inputs: bool = True

    def __init__(
        self,
        model: nn.Module,
        eps: float | torch.Tensor = 8 / 255,
        *,
        loss: str | ModelLoss = "ce",
        targeted: bool = False,
        seed: int = 0,
        model_training: bool = False,
    ):
        check_eps(eps)
        self.model = model
        self.eps = eps
        self.loss = loss
        self.loss_fn = ATTACK_LOSSES.get(loss) if isinstance(loss, str) else None
        self.targeted = targeted
        self.seed = seed
        self.model_training = model_training
        self._generator: torch.Generator | None = None

    # -- randomness -------------------------------------------------------------------------
    def generator(self, device: torch.device) -> torch.Generator:
        if self._generator is None or self._generator.device.type != torch.device(device).type:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        return self._generator

    def get_rng_state(self) -> torch.Tensor | None:
        return None if self._generator is None else self._generator.get_state()

    def set_rng_state(self, state: torch.Tensor, device: torch.device) -> None:
        self.generator(device).set_state(state)

    # -- objective ----------------------------------------------------------------------------
    def objective(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        """Per-sample loss to maximise at x."""
        if self.loss_fn is None:
            value = self.loss(self.model, x, y)  # adaptive: the defense's own objective
            return value if target is None else -value
        return self.loss_fn(self.model(x), y, target)

    def input_grad(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self.objective(x, y, target).sum(), x)
        return grad.detach()

    # -- call contract ------------------------------------------------------------------------
    @abstractmethod
    def perturb(self, x: torch.Tensor, y: torch.Tensor,
                target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return (x_adv, restart index per sample, or None for single-run attacks)."""

    def settings(self) -> dict[str, Any]:
        """The fully resolved hyper-parameters, for reports."""
        eps = self.eps.tolist() if isinstance(self.eps, torch.Tensor) else self.eps
        loss = self.loss if isinstance(self.loss, str) else getattr(self.loss, "__name__", "custom")
        return {"attack": self.name, "norm": self.norm, "eps": eps, "loss": loss,
                "targeted": self.targeted, "seed": self.seed, **self.extra_settings()}

    def extra_settings(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.settings().items() if k != "attack")
        return f"{type(self).__name__}({args})"

    def _check_inputs(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> None:
        if not self.validate_inputs:
            return
        if x.dim() < 2 or y.shape[0] != x.shape[0]:
            raise ValueError("x must be a batch (B, ...) and y its B labels")
        if float(x.min()) < 0 or float(x.max()) > 1:
            raise ValueError("attack inputs must be pixels in [0, 1]")
        if self.targeted and target is None:
            raise ValueError(f"{self.name} is targeted: pass target labels")

    def run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> AttackResult:
        self._check_inputs(x, y, target)
        x = x.detach()
        with model_mode(self.model, self.model_training), torch.enable_grad():
            x_adv, restart = self.perturb(x, y, target if self.targeted else None)
            with torch.no_grad():
                clean_pred = self.model(x).argmax(1)
                adv_pred = self.model(x_adv).argmax(1)
        clean_correct = clean_pred == y
        success = adv_pred == target if self.targeted else adv_pred != y
        delta = (x_adv - x).flatten(1)
        norm = delta.abs().amax(1) if self.norm == "linf" else delta.norm(p=2, dim=1)
        if restart is None:
            restart = torch.where(success, 0, -1)
        return AttackResult(x_adv.detach(), clean_correct, clean_correct & (adv_pred == y), success,
                            norm, restart, self.settings())

    def __call__(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        self._check_inputs(x, y, target)
        with model_mode(self.model, self.model_training), torch.enable_grad():
            x_adv, _ = self.perturb(x.detach(), y, target if self.targeted else None)
        return x_adv.detach()


def project_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Project onto the L-inf ball of radius eps around x, intersected with [0, 1]."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)
