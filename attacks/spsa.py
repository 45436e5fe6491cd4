"""SPSA (Uesato et al., 2018), L-inf: a gradient-free attack, as in advertorch's spsa.py.

Each iteration estimates the gradient of the objective (default: the logit margin, advertorch's
MarginalLoss) at the current point x' by finite differences along `samples` random Rademacher
directions v (entries +-1):

    g = mean_v [ (L(x' + delta v) - L(x' - delta v)) / (2 delta) * v ]

then takes one Adam step (lr 0.01) of gradient *ascent* on the perturbation and projects it onto
the eps-ball and [0, 1]. The model only runs forward, under torch.no_grad().

Choices:
- Batched: every sample of the batch is attacked at once, each with its own random directions
  (advertorch shares one set of directions across the batch). `max_batch` is the number of model
  inputs per forward pass (the +/- pairs count twice); advertorch's max_batch counts directions.
- Defaults: steps 10 (SPEC [I]: the PC-LC notebook; advertorch's nb_iter is 1), samples 128,
  delta 0.01, lr 0.01. Note Adam moves each pixel by about lr per step, so `steps * lr` bounds how
  far the attack can get from x; with the defaults that is ~0.1, less than PC-LC's eps 0.3.
- `early_stop`: a sample leaves the batch once fooled (checked before each iteration and after
  the last, one extra forward pass per iteration), keeping the fooling iterate.
- Any attack loss (ce / cw / dlr) or a custom (model, x, y) objective can replace the margin.
"""

from __future__ import annotations

import math

import torch

from workbench.attack_meta import Param

from .base import Attack, as_eps, rows
from .registry import register_attack


@register_attack
class SPSA(Attack):
    name = "spsa"
    norms = ("linf",)
    flag = "--spsa"
    label = "SPSA"
    summary = "gradient-free: finite differences on random directions"
    needs_input_grad = False  # forward passes only (picks the CPU layout, see prefers_nhwc)
    params = (Param("steps", int, 10, "iterations", minimum=1, option="steps"),
              Param("samples", int, 128, "random directions per iteration", minimum=1),
              Param("delta", float, 0.01, "finite-difference step", positive=True),
              Param("lr", float, 0.01, "Adam learning rate", positive=True))

    def __init__(self, model, eps=8 / 255, steps: int = 10, samples: int = 128, delta: float = 0.01,
                 lr: float = 0.01, max_batch: int = 2048, **kwargs):
        kwargs.setdefault("loss", "cw")
        super().__init__(model, eps, **kwargs)
        if steps < 1 or samples < 1:
            raise ValueError("steps and samples must be >= 1")
        if max_batch < 2:
            raise ValueError("max_batch must be >= 2 (one +/- pair)")
        for key, value in (("delta", delta), ("lr", lr)):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{key} must be a finite number > 0, got {value!r}")
        self.steps, self.samples, self.delta, self.lr, self.max_batch = steps, samples, delta, lr, max_batch

    def extra_settings(self):
        return {"steps": self.steps, "samples": self.samples, "delta": self.delta, "lr": self.lr,
                "max_batch": self.max_batch}

    def _grad_estimate(self, xa: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
                       gen: torch.Generator) -> torch.Tensor:
        """Finite-difference gradient estimate of the objective at each row of xa."""
        b = xa.shape[0]
        grad = torch.zeros_like(xa)
        total = self.samples * b  # (direction, row) pairs, direction-major
        chunk = self.max_batch // 2
        for start in range(0, total, chunk):
            row = torch.arange(start, min(start + chunk, total), device=xa.device) % b
            v = torch.randint(0, 2, (len(row), *xa.shape[1:]), generator=gen, device=xa.device,
                              dtype=xa.dtype).mul_(2).sub_(1)
            xr = xa[row]
            inputs = torch.cat([xr + self.delta * v, xr - self.delta * v])
            yr = y[row].repeat(2)
            tr = None if target is None else target[row].repeat(2)
            value = self.objective(inputs, yr, tr)
            df = (value[: len(row)] - value[len(row):]) / (2 * self.delta)
            grad.index_add_(0, row, df.view(-1, *([1] * (xa.dim() - 1))) * v)
        return grad / self.samples

    def perturb(self, x, y, target):
        gen = self.generator(x.device)
        eps = as_eps(self.eps, x)
        x_adv = x.clone()
        idx = torch.arange(x.shape[0], device=x.device)
        x0, ya, ta = x, y, target
        xa = x.clone()
        m, v = torch.zeros_like(x), torch.zeros_like(x)
        beta1, beta2 = 0.9, 0.999
        with torch.no_grad():
            for it in range(self.steps + 1):
                self.step(it, self.steps + 1, int(idx.numel()), x.shape[0])
                if self.early_stop:
                    keep = ~self.fooled(self.logits(xa), ya, ta)
                    if not bool(keep.all()):  # fooled rows keep the iterate that fooled the model
                        x_adv[idx] = xa
                        idx, x0, ya, xa, m, v = idx[keep], x0[keep], ya[keep], xa[keep], m[keep], v[keep]
                        ta = None if ta is None else ta[keep]
                        eps = rows(eps, keep)
                        if idx.numel() == 0:
                            return x_adv, None
                if it == self.steps:
                    break
                g = self._grad_estimate(xa, ya, ta, gen)
                step = it + 1
                m = beta1 * m + (1 - beta1) * g
                v = beta2 * v + (1 - beta2) * g * g
                ascent = self.lr * (m / (1 - beta1 ** step)) / ((v / (1 - beta2 ** step)).sqrt() + 1e-8)
                xa = self.project(xa + ascent, x0, eps)
        x_adv[idx] = xa
        return x_adv, None
