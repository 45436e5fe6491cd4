"""What an evaluation runs: attack specs grouped into named protocols.

An `AttackSpec` is one attack with fixed hyper-parameters and a list of sweep values
(eps, or DeepFool's max residue ratio). A `Protocol` is an ordered list of specs;
with `cascade`, a later spec only attacks the samples every earlier spec left robust
at that eps (as AutoAttack runs its members), so its row reads "robust to all so far".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attacks import ATTACKS

from ..config.schema import resolve_step_size
from ..errors import WorkbenchError


@dataclass
class AttackSpec:
    attack: str  # registry name
    params: dict[str, Any] = field(default_factory=dict)  # constructor parameters; step_size may be "eps/4"
    sweep: list[float] | None = None  # values of the attack's sweep parameter; None: one unbounded run
    label: str = ""
    max_samples: int | None = None  # evaluate on the first N samples only (the papers use 1k for costly attacks)
    # Minimum-norm attacks (C&W, DeepFool): also report robust accuracy at these perturbation sizes.
    thresholds: list[float] | None = None
    # Count a sample fooled at eps as fooled at every larger eps (valid: the same perturbation fits).
    # The gradient-masking audit turns it off to see whether accuracy falls with eps on its own.
    monotone: bool = True

    def __post_init__(self) -> None:
        cls = ATTACKS.get(self.attack)
        if not self.label:
            self.label = self.attack
        if self.sweep is not None:
            if self.sweep_param is None:
                raise WorkbenchError(f"{self.label}: takes no sweep values (it finds minimal perturbations)")
            self.sweep = sorted(float(v) for v in self.sweep)
        elif cls.bounded:
            raise WorkbenchError(f"{self.label}: needs eps values")

    @property
    def cls(self):
        return ATTACKS.get(self.attack)

    @property
    def sweep_param(self) -> str | None:
        cls = self.cls
        return cls.sweep_param if cls.bounded or cls.sweep_param != "eps" else None

    @property
    def norm(self) -> str:
        return self.params.get("norm") or self.cls.norms[0]

    def build(self, model, value=None, **overrides):
        """The attack for one sweep value (a float or a per-sample tensor); overrides win over params."""
        params = {**self.params, **overrides}
        step = params.get("step_size")
        if isinstance(step, str):  # an expression of eps, resolved per sample
            params["step_size"] = resolve_step_size(step, 1.0, int(params.get("steps", 1))) * value
        if self.sweep_param is not None:
            params[self.sweep_param] = value
        try:
            return self.cls(model, **params)
        except (TypeError, ValueError) as exc:
            raise WorkbenchError(f"{self.label}: {exc}") from None


@dataclass
class Protocol:
    name: str
    specs: list[AttackSpec]
    description: str = ""
    cascade: bool = False
