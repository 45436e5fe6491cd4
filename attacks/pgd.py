"""PGD, L-inf (Madry et al., 2018): iterated signed-gradient steps with projection.

Uniform random start in the eps-ball (off gives BIM), `steps` steps of `step_size`
(default 2.5 * eps / steps), and `restarts` independent runs keeping, per sample,
the first restart that succeeds (later restarts only run on still-robust samples).
"""

from __future__ import annotations

import torch

from .base import Attack, as_eps, project_linf
from .registry import register_attack


@register_attack
class PGD(Attack):
    name = "pgd"
    norm = "linf"

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

    def _one_run(self, x, y, target, eps, alpha):
        if self.random_start:
            noise = torch.rand(x.shape, generator=self.generator(x.device), device=x.device, dtype=x.dtype)
            x_adv = (x + (2 * noise - 1) * eps).clamp_(0.0, 1.0)
        else:
            x_adv = x.clone()
        for _ in range(self.steps):
            grad = self.input_grad(x_adv, y, target)
            x_adv = project_linf(x_adv + alpha * grad.sign(), x, eps)
        return x_adv

    def _succeeded(self, x_adv, y, target):
        with torch.no_grad():
            pred = self.model(x_adv).argmax(1)
        return pred == target if target is not None else pred != y

    def perturb(self, x, y, target):
        eps = as_eps(self.eps, x)
        alpha = as_eps(self.step_size, x) if self.step_size is not None else self._default_step(eps)

        def rows(t, idx):  # per-sample tensors follow the subset; scalars stay as they are
            return t[idx] if t.dim() > 0 and t.numel() > 1 else t

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
                x_best[idx] = self._one_run(x[idx], y[idx], t, rows(eps, idx), rows(alpha, idx))
            hit = self._succeeded(x_best, y, target) & active
            restart[hit] = r
            active &= ~hit
        return x_best, restart
