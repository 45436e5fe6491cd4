"""PGD (Madry et al., 2018) in L-inf and L2: iterated steepest-ascent steps with projection.

Uniform random start in the eps-ball (off gives BIM), `steps` steps of `step_size`
(default 2.5 * eps / steps), and `restarts` independent runs keeping, per sample,
the first restart that succeeds (later restarts only run on still-robust samples).
With `early_stop` (the default) a sample leaves the batch at the first iterate that
fools the model: that iterate is a valid adversarial example, and the remaining steps
would only be spent on it.
"""

from __future__ import annotations

import torch

from workbench.attack_meta import Param

from .base import Attack, Retirement, as_eps, rows, unit_step
from .losses import loss_param
from .registry import register_attack


@register_attack
class PGD(Attack):
    name = "pgd"
    norms = ("linf", "l2")
    flag = "--pgd"
    label = "PGD{norm:suffix}"
    summary = "PGD with random start and restarts"
    # 40 steps on the command line (the constructor's 10 is the training default).
    params = (Param("steps", int, 40, "iterations", minimum=1, option="steps"),
              Param("step_size", float, None, "step in pixels (auto: 2.5*eps/steps)", positive=True,
                    option="step_size"),
              Param("restarts", int, 1, "random restarts; per sample the first that succeeds", minimum=1,
                    option="restarts"),
              Param("random_start", bool, True, "start at a uniform point of the eps-ball"), loss_param())

    def __init__(self, model, eps=8 / 255, steps: int = 10, step_size: float | None = None,
                 random_start: bool = True, restarts: int = 1, **kwargs):
        super().__init__(model, eps, **kwargs)
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        if step_size is not None and not bool((torch.as_tensor(step_size) > 0).all()):
            raise ValueError("step_size must be > 0")
        self.steps = steps
        self.step_size = step_size
        self.random_start = random_start
        self.restarts = restarts

    def extra_settings(self):
        step = self.step_size
        if step is None:
            step = self._default_step(self.eps) if isinstance(self.eps, (int, float)) else "default (per-sample eps)"
        elif isinstance(step, torch.Tensor):
            step = step.flatten().tolist() if step.numel() > 1 else float(step)
        return {"steps": self.steps, "step_size": step, "random_start": self.random_start, "restarts": self.restarts}

    def _default_step(self, eps):
        return 2.5 * eps / self.steps  # Madry et al.: enough to cross the ball and back

    def _start(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        gen = self.generator(x.device)
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            return (x + (2 * noise - 1) * eps).clamp_(0.0, 1.0)
        # L2: a uniformly random direction, radius uniform in [0, eps].
        direction = unit_step(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype), "l2")
        radius = torch.rand(x.shape[0], generator=gen, device=x.device, dtype=x.dtype)
        return (x + direction * radius.view(-1, *([1] * (x.dim() - 1))) * eps).clamp_(0.0, 1.0)

    def _one_run(self, x, y, target, eps, alpha, run_no: int = 0, batch: int | None = None):
        x_adv = self._start(x, eps)
        batch = x.shape[0] if batch is None else batch
        idx = torch.arange(x.shape[0], device=x.device)  # rows still in the batch
        xa, x0, ya, ta = x_adv.clone(), x, y, target
        frozen = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)  # fooled, not yet removed
        retire = Retirement(x.device, self.early_stop)
        for k in range(self.steps):
            self.step(run_no * self.steps + k, self.restarts * self.steps, int(idx.numel()), batch)
            grad, logits = self.loss_grad(xa, ya, ta)
            if self.early_stop and logits is not None:
                frozen |= self.fooled(logits, ya, ta)  # fooled rows keep the iterate that fooled the model
                if retire.due(frozen):
                    x_adv[idx] = xa
                    keep = retire.keep(frozen)
                    idx = idx[keep]
                    if idx.numel() == 0:
                        return x_adv
                    xa, x0, ya, grad, frozen = xa[keep], x0[keep], ya[keep], grad[keep], frozen[keep]
                    ta = None if ta is None else ta[keep]
                    eps, alpha = rows(eps, keep), rows(alpha, keep)
            xa = retire.settle(frozen, xa, self.project(xa + alpha * unit_step(grad, self.norm), x0, eps))
        x_adv[idx] = xa
        return x_adv

    def _succeeded(self, x_adv, y, target):
        with torch.no_grad():
            return self.fooled(self.logits(x_adv), y, target)

    def perturb(self, x, y, target):
        eps = as_eps(self.eps, x)
        alpha = as_eps(self.step_size, x) if self.step_size is not None else self._default_step(eps)

        x_best = self._one_run(x, y, target, eps, alpha)
        if self.restarts == 1:
            return x_best, None  # no extra forward pass: run() derives the restart from success
        restart = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for r in range(self.restarts):
            if r > 0:
                idx = active.nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                t = target[idx] if target is not None else None
                x_best[idx] = self._one_run(x[idx], y[idx], t, rows(eps, idx), rows(alpha, idx), r, x.shape[0])
            hit = self._succeeded(x_best, y, target) & active
            restart[hit] = r
            active &= ~hit
        return x_best, restart
