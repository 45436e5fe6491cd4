"""AutoAttack (Croce & Hein, ICML 2020): an ensemble of parameter-free attacks run in sequence.

version "standard" is the published ensemble with the published budgets, for L-inf and L2:
  1. APGD-CE: 100 iterations, 1 restart;
  2. APGD-T: targeted DLR, 9 target classes, 100 iterations, 1 restart per target;
  3. FAB-T: 9 target classes, 100 iterations, 1 restart;
  4. Square: 5000 queries, p_init 0.8, 1 restart.
Each stage attacks only the samples every earlier stage left robust (and the clean input classifies
correctly); after each stage a forward pass re-checks which of its points are really misclassified
(projected onto the ensemble's eps-ball and [0, 1] first), and a sample's adversarial example is
never replaced once found. Per sample the result is the worst case over the stages; `stage` names
the sub-attack that broke it (-1: none did, or the clean input was already misclassified) and
`restart` is that sub-attack's restart (APGD-T: its target-class index). Robust samples get x back.

version "fast" = APGD-CE + APGD-T only (same budgets): NOT the standard AutoAttack, and reported so.
`attacks=[(name, params), ...]` builds a custom ensemble from registered attacks.

Unlike torchattacks' AutoAttack (10-step sub-attacks) or ART's (DeepFool instead of FAB), the
settings report lists each stage with its resolved settings: exactly what ran. Stage i uses seed
`seed + i`, so the ensemble is deterministic under its seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import time

import torch

from workbench.attack_meta import Param

from .base import Attack, StageStats, StepProgress, as_eps, nhwc_weights, perturbation_norm
from .registry import ATTACKS, register_attack

StageSpec = tuple[str, dict[str, Any]]

VERSIONS: dict[str, list[StageSpec]] = {
    "standard": [
        ("apgd_ce", {"steps": 100, "restarts": 1}),
        ("apgd_t", {"steps": 100, "restarts": 1, "n_target_classes": 9}),
        ("fab_t", {"steps": 100, "restarts": 1, "n_target_classes": 9}),
        ("square", {"queries": 5000, "p_init": 0.8, "restarts": 1}),
    ],
    "fast": [
        ("apgd_ce", {"steps": 100, "restarts": 1}),
        ("apgd_t", {"steps": 100, "restarts": 1, "n_target_classes": 9}),
    ],
}
VERSION_NOTE = {"standard": "published standard AutoAttack",
                "fast": "APGD-CE + APGD-T only: NOT the standard AutoAttack",
                "custom": "custom ensemble: NOT the standard AutoAttack"}
# Set by the ensemble, not per stage.
_RESERVED = ("model", "eps", "norm", "seed", "targeted", "model_training", "early_stop", "precision")


@register_attack
class AutoAttack(Attack):
    name = "autoattack"
    norms = ("linf", "l2")
    targeted_capable = False  # the sub-attacks pick their own targets; the goal is misclassification
    flag = "--autoattack"
    label = "AutoAttack{version:suffix}"
    summary = "APGD-CE, APGD-T, FAB-T, Square, each on what the ones before left robust"
    params = (Param("version", str, "standard", "standard (published) | fast (APGD-CE + APGD-T only)",
                    choices=tuple(VERSIONS)),)

    def __init__(self, model, eps=8 / 255, norm: str = "linf", version: str = "standard",
                 attacks: Sequence[StageSpec] | None = None, seed: int = 0, **kwargs):
        if "loss" in kwargs:
            raise ValueError("AutoAttack's sub-attacks fix their own losses; pass attacks=[(name, params)] instead")
        super().__init__(model, eps, norm=norm, seed=seed, **kwargs)
        if attacks is not None:
            if version not in ("standard", "custom"):
                raise ValueError("pass either version or attacks, not both")
            version = "custom"
            specs = [self._check_spec(s) for s in attacks]
            if not specs:
                raise ValueError("attacks must list at least one (name, params)")
        elif version in VERSIONS:
            specs = [(n, dict(p)) for n, p in VERSIONS[version]]
        else:
            raise ValueError(f"unknown AutoAttack version {version!r}; choose standard | fast, or pass attacks=[...]")
        self.version = version
        self.specs = specs
        self.sub_attacks = self._build(specs)
        self._synced_seed = seed
        self._stage_stats: list[StageStats] = []

    @staticmethod
    def _check_spec(spec) -> StageSpec:
        if isinstance(spec, str):
            spec = (spec, {})
        try:
            name, params = spec
            params = dict(params)
        except (TypeError, ValueError):
            raise ValueError(f"each custom stage must be (name, params), got {spec!r}") from None
        bad = sorted(set(params) & set(_RESERVED))
        if bad:
            raise ValueError(f"stage {name!r}: {bad[0]!r} is set by the ensemble, not per stage")
        return name, params

    def _build(self, specs: list[StageSpec]) -> list[Attack]:
        """Instantiate the stages."""
        subs = []
        for i, (name, params) in enumerate(specs):
            if name not in ATTACKS:
                raise ValueError(f"AutoAttack stage {name!r} is not a registered attack")
            cls = ATTACKS.get(name)
            if self.norm not in cls.norms:
                raise ValueError(f"stage {name!r} supports norm {' | '.join(cls.norms)}, not {self.norm!r}")
            common = {"norm": self.norm, "seed": self.seed + i, "model_training": self.model_training,
                      "early_stop": self.early_stop, "precision": self.precision}
            if cls.bounded:
                common["eps"] = self.eps
            subs.append(cls(self.model, **common, **params))
        return subs

    def _sync(self) -> None:
        """Stages follow the ensemble's current seed, eps, mode and precision (settable after construction)."""
        reseed = self.seed != self._synced_seed
        for i, sub in enumerate(self.sub_attacks):
            sub.seed = self.seed + i
            if reseed:
                sub._generator = None
            sub.model_training = self.model_training
            sub.early_stop = self.early_stop
            sub.validate_inputs = self.validate_inputs
            sub.nhwc_on_cpu = self.nhwc_on_cpu
            sub.precision = self.precision
            if sub.bounded:
                sub.eps = self.eps
        self._synced_seed = self.seed

    def stages(self) -> tuple[str, ...]:
        names: list[str] = []
        for name, _ in self.specs:  # a repeated stage gets a suffix: apgd_ce, apgd_ce#2
            n = sum(1 for m in names if m == name or m.startswith(name + "#"))
            names.append(name if n == 0 else f"{name}#{n + 1}")
        return tuple(names)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "loss": "per stage"}

    def extra_settings(self) -> dict[str, Any]:
        self._sync()
        stages = []
        for i, (name, sub) in enumerate(zip(self.stages(), self.sub_attacks)):
            s = sub.settings()
            s.pop("eps", None)  # the ensemble's eps
            stages.append({"stage": i, "name": name, **s})
        return {"version": self.version, "standard": self.version == "standard", "note": VERSION_NOTE[self.version],
                "stages": stages}

    def nhwc_for(self, x: torch.Tensor) -> bool:
        return False  # the ensemble's own call keeps the layout; each stage picks its own in `perturb`

    def last_stage_stats(self) -> list[StageStats]:
        return list(self._stage_stats)

    def _stage_hook(self, i: int, robust_before: int, batch: int):
        """The ensemble's hook for stage i: the stage's own step, with the ensemble's robust count and position."""
        if self.on_step is None:
            return None
        names, hook = self.stages(), self.on_step

        def forward(p: StepProgress) -> None:
            broken_here = p.batch - p.active  # rows of this stage's input it has fooled so far
            hook(StepProgress(names[i], p.done, p.total, p.active, batch, robust_before - broken_here, i, len(names)))
        return forward

    def perturb(self, x, y, target):
        self._sync()
        self._stage_stats = []
        B = x.shape[0]
        x_adv = x.clone()
        stage = torch.full((B,), -1, dtype=torch.long, device=x.device)
        restart = torch.full((B,), -1, dtype=torch.long, device=x.device)
        eps = as_eps(self.eps, x) * torch.ones((B,) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)
        with torch.no_grad():
            robust = self.logits(x).argmax(1) == y
        full_eps = self.eps
        names = self.stages()
        for i, sub in enumerate(self.sub_attacks):
            idx = robust.nonzero().squeeze(1)
            if idx.numel() == 0:
                self._stage_stats += [StageStats(n, 0.0, 0, 0) for n in names[i:]]
                break
            if sub.bounded and isinstance(full_eps, torch.Tensor) and full_eps.dim() > 0:
                sub.eps = full_eps.to(x.device)[idx]  # per-sample eps follows the attacked rows
            t0 = time.perf_counter()
            sub.on_step = self._stage_hook(i, int(idx.numel()), B)
            try:
                with nhwc_weights(self.model, x, sub.nhwc_for(x)):  # each stage in its faster layout
                    out = sub.perturb(x[idx], y[idx], None)
            finally:
                sub.on_step = None
                if sub.bounded:
                    sub.eps = full_eps
            xa, r = out[0].detach(), out[1]
            x0, e = x[idx], eps[idx]
            xa = self.project(xa, x0, e)  # only points inside the ensemble's ball count
            with torch.no_grad():
                hit = self.logits(xa).argmax(1) != y[idx]
            hit &= perturbation_norm(xa - x0, self.norm) <= e.flatten() + 1e-6
            j = idx[hit]
            x_adv[j] = xa[hit]
            stage[j] = i
            restart[j] = r[hit].clamp_min(0) if r is not None else 0
            robust[j] = False
            self._stage_stats.append(StageStats(names[i], time.perf_counter() - t0, int(idx.numel()), int(j.numel())))
            if self.on_step is not None:  # the stage's end, with the exact count after the re-check
                left = int(idx.numel()) - int(j.numel())
                total = max(getattr(sub, "_budget", (0, 1, 0))[1], 1)
                self.on_step(StepProgress(names[i], total, total, left, B, int(robust.sum()), i, len(names)))
        return x_adv, restart, stage
