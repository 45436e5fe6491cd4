"""MIM, the momentum iterative method (Dong et al., 2018), L-inf.

g_{t+1} = decay * g_t + grad / ||grad||_1 (per sample), x_{t+1} = Proj(x_t + step_size * sign(g_{t+1})),
from the clean input. Defaults: 10 iterations of eps/10, decay 1.0 (the PCL papers' settings).
"""

from __future__ import annotations

import torch

from workbench.attack_meta import Param

from .base import Attack, Retirement, as_eps, rows
from .losses import loss_param
from .registry import register_attack


@register_attack
class MIM(Attack):
    name = "mim"
    norm = "linf"
    flag = "--mim"
    label = "MIM"
    summary = "momentum iterative method, from the clean input"
    params = (Param("steps", int, 10, "iterations", minimum=1, option="steps"),
              Param("step_size", float, None, "step in pixels (auto: eps/10)", positive=True, option="step_size"),
              Param("decay", float, 1.0, "momentum decay", minimum=0), loss_param())

    def __init__(self, model, eps=8 / 255, steps: int = 10, step_size: float | None = None, decay: float = 1.0,
                 **kwargs):
        super().__init__(model, eps, **kwargs)
        if steps < 1:
            raise ValueError("steps must be >= 1")
        if step_size is not None and not bool((torch.as_tensor(step_size) > 0).all()):
            raise ValueError("step_size must be > 0")
        if decay < 0:
            raise ValueError("decay must be >= 0")
        self.steps, self.step_size, self.decay = steps, step_size, decay

    def extra_settings(self):
        step = self.step_size if self.step_size is not None else (
            self.eps / 10 if isinstance(self.eps, (int, float)) else "eps/10")
        if isinstance(step, torch.Tensor):
            step = step.flatten().tolist() if step.numel() > 1 else float(step)
        return {"steps": self.steps, "step_size": step, "decay": self.decay}

    def perturb(self, x, y, target):
        eps = as_eps(self.eps, x)
        alpha = as_eps(self.step_size, x) if self.step_size is not None else eps / 10
        momentum = torch.zeros_like(x)
        x_adv = x.clone()
        idx = torch.arange(x.shape[0], device=x.device)
        xa, x0, ya, ta = x_adv.clone(), x, y, target
        frozen = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        retire = Retirement(x.device, self.early_stop)
        for k in range(self.steps):
            self.step(k, self.steps, int(idx.numel()), x.shape[0])
            grad, logits = self.loss_grad(xa, ya, ta)
            if self.early_stop and logits is not None:
                frozen |= self.fooled(logits, ya, ta)  # see PGD: fooled rows keep their iterate
                if retire.due(frozen):
                    x_adv[idx] = xa
                    keep = retire.keep(frozen)
                    idx = idx[keep]
                    if idx.numel() == 0:
                        return x_adv, None
                    xa, x0, ya, grad, momentum = xa[keep], x0[keep], ya[keep], grad[keep], momentum[keep]
                    frozen = frozen[keep]
                    ta = None if ta is None else ta[keep]
                    eps, alpha = rows(eps, keep), rows(alpha, keep)
            l1 = grad.abs().flatten(1).sum(1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
            momentum = self.decay * momentum + grad / l1
            xa = retire.settle(frozen, xa, self.project(xa + alpha * momentum.sign(), x0, eps))
        x_adv[idx] = xa
        return x_adv, None
