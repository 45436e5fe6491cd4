"""Multi-targeted PGD (Gowal et al., 2019), as the ADR paper evaluates it (eval_multi_targeted.py).

For each target class t != y, a targeted PGD run minimises CE(x', t) (same eps, steps, step size
and random start as the untargeted attack). A sample is broken as soon as any run leaves it
misclassified (prediction != y, not necessarily t); it is robust only if every run fails.

Built on `attacks.pgd.PGD` (targeted, with a target tensor): only still-robust samples enter
later runs, and the result's `restart` is the index of the run that broke the sample.

Choices:
- Runs go by rank: run j targets each sample's (j+1)-th most likely class other than y at the
  clean input, so likely targets come first and later runs see fewer samples. All K-1 classes by
  default; `n_target_classes` keeps the top few. (ADR's code loops t = 0..K-1 for every sample,
  t = y included, which cannot succeed on its own terms; we skip it.)
- Inside a run a sample stops at the first iterate that is misclassified (any class), the
  attack's success criterion, rather than at the target class (with `early_stop`).
- Defaults: 40 steps of 0.01 with a random start (ADR's PGD-40); loss "ce" (targeted CE), or any
  attack loss name ("cw": targeted logit margin).
- Samples misclassified at the clean input are not attacked (restart 0, like PGD's restarts).
- A sample no run broke gets the last run's final point.
- All randomness comes from this attack's generator (shared with the inner PGD runs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.attack_meta import Param

from .base import Attack, rows
from .losses import loss_param
from .pgd import PGD
from .registry import register_attack


class _TargetedRun(PGD):
    """Targeted PGD whose rows stop once misclassified (the multi-targeted success), not at the target."""

    def __init__(self, model, **kwargs):
        super().__init__(model, targeted=True, **kwargs)

    def fooled(self, logits, y, target):
        # PGD hands us (y, target) of the active rows: success is "no longer y".
        return logits.argmax(1) != y


@register_attack
class MultiTargeted(Attack):
    name = "multitarget"
    norms = ("linf", "l2")
    targeted_capable = False
    flag = "--multitarget"
    label = "Multi-targeted PGD"
    summary = "targeted PGD toward every other class; broken if any run fools"
    params = (Param("steps", int, 40, "iterations per target class", minimum=1, option="steps"),
              Param("step_size", float, 0.01, "step in pixels", positive=True, option="step_size"),
              Param("n_target_classes", int, None, "most likely other classes to target (auto: all)",
                    minimum=1),
              loss_param())

    def __init__(self, model, eps=8 / 255, steps: int = 40, step_size: float | torch.Tensor | None = 0.01,
                 random_start: bool = True, n_target_classes: int | None = None, **kwargs):
        super().__init__(model, eps, **kwargs)
        if not isinstance(self.loss, str):
            raise ValueError("multitarget needs an attack loss name (ce | cw | dlr), not a custom objective")
        if steps < 1:
            raise ValueError("steps must be >= 1")
        if step_size is not None and not bool((torch.as_tensor(step_size) > 0).all()):
            raise ValueError("step_size must be > 0")
        if n_target_classes is not None and n_target_classes < 1:
            raise ValueError("n_target_classes must be >= 1 (or None for all classes)")
        self.steps, self.step_size, self.random_start = steps, step_size, random_start
        self.n_target_classes = n_target_classes

    def extra_settings(self):
        step = self.step_size
        if isinstance(step, torch.Tensor):
            step = step.flatten().tolist() if step.numel() > 1 else float(step)
        elif step is None:
            step = "2.5*eps/steps"
        return {"steps": self.steps, "step_size": step, "random_start": self.random_start,
                "n_target_classes": self.n_target_classes}

    def perturb(self, x, y, target):
        with torch.no_grad():
            logits0 = self.logits(x)
        n, k = logits0.shape
        runs = k - 1 if self.n_target_classes is None else min(self.n_target_classes, k - 1)
        ranked = logits0.masked_fill(F.one_hot(y, k).bool(), float("-inf")).topk(runs, dim=1).indices

        x_adv = x.clone()
        restart = torch.full((n,), -1, dtype=torch.long, device=x.device)
        broken = logits0.argmax(1) != y
        restart[broken] = 0
        eps = self.eps.to(x.device) if isinstance(self.eps, torch.Tensor) else self.eps
        step = self.step_size.to(x.device) if isinstance(self.step_size, torch.Tensor) else self.step_size
        gen = self.generator(x.device)
        for j in range(runs):
            idx = (~broken).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            run = _TargetedRun(self.model, eps=rows(eps, idx), steps=self.steps,
                               step_size=rows(step, idx), random_start=self.random_start, norm=self.norm,
                               loss=self.loss, early_stop=self.early_stop, precision=self.precision)
            run._generator = gen  # one random stream for the whole attack
            if self.on_step is not None:  # the target runs' steps, as steps of the whole attack
                run.on_step = lambda p, j=j: self.step(j * self.steps + p.done, runs * self.steps, p.active, n)
            xj, _ = run.perturb(x[idx], y[idx], ranked[idx, j])
            with torch.no_grad():
                hit = self.logits(xj).argmax(1) != y[idx]
            x_adv[idx] = xj  # robust rows keep the latest run's point (what adversarial training wants)
            restart[idx[hit]] = j
            broken[idx[hit]] = True
        return x_adv, restart
