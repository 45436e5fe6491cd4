"""Auto-PGD (Croce & Hein, ICML 2020), untargeted/targeted, and APGD-T, its multi-target version.

APGD is PGD with a budget-aware step-size schedule, so it needs no step size:
- start at a random point (L-inf: uniform in the ball, as PGD; L2: on the sphere of radius eps,
  as the reference code), step size eta = 2 * eps;
- x1 = P(x0 + eta * s(grad)); then z = P(x_k + eta * s(grad)),
  x_{k+1} = P(x_k + alpha * (z - x_k) + (1 - alpha) * (x_k - x_{k-1})) with momentum alpha = 0.75
  (s = sign for L-inf, grad / ||grad||_2 for L2; P projects onto the ball and [0, 1]);
- the best-loss point per sample is kept; at checkpoints w_j = ceil(p_j * N), p_0 = 0, p_1 = 0.22,
  p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), a sample halves its step size and restarts from
  its best point when (1) the loss went up in fewer than rho = 0.75 of the steps since the last
  checkpoint, or (2) its step size was not halved at the last checkpoint and its best loss has not
  improved since.

Choices (the paper leaves them open; we follow the reference code where it has one):
- after a restart from the best point, the momentum term is x_best - x_{k-1} (as the reference);
- the iterate count N is `steps`; N + 1 forward passes (the start included), N gradients;
- `early_stop` on (default): a sample leaves the batch at the first iterate that fools the model and
  keeps that iterate (AutoAttack's semantics: any adversarial point counts), so it costs no more
  gradients. Off: every sample runs all N steps and keeps its best-loss point if that one fools
  the model, else the last fooling iterate, else the best-loss point;
- `restarts` > 1: later restarts run only on samples no earlier restart fooled; a sample never
  fooled keeps its highest-loss point over the restarts.

APGD-T (`apgd_t`, the version in AutoAttack) runs APGD with the targeted DLR loss towards each of the
`n_target_classes` (default 9) highest-scoring wrong classes of the clean input in turn, each only on
the samples still robust. Its goal stays untargeted (success = misclassified); `restart` reports the
index of the target class (0 = highest wrong logit) whose run fooled the model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from workbench.attack_meta import Param

from .base import Attack, as_eps, unit_step
from .losses import loss_param
from .registry import register_attack


def _rows(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-row mask shaped to broadcast over `like`'s rows."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def checkpoints(steps: int) -> list[int]:
    """The iterations w_j (0 < w_j < steps) where APGD may halve its step size."""
    p = [0.0, 0.22]
    while p[-1] < 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    # ceil with a tolerance: 0.22 * 100 is 22.000000000000004 in floating point
    ws = sorted({math.ceil(q * steps - 1e-9) for q in p[1:]})
    return [w for w in ws if 0 < w < steps]


@register_attack
class APGD(Attack):
    name = "apgd"
    norms = ("linf", "l2")
    default_loss = "ce"
    flag = "--apgd"
    label = "APGD-{loss:upper}"
    summary = "Auto-PGD (adaptive step size) on the chosen loss"
    params = (Param("steps", int, 100, "iterations", minimum=1, option="steps"),
              Param("restarts", int, 1, "random restarts", minimum=1, option="restarts"), loss_param())

    def __init__(self, model, eps=8 / 255, steps: int = 100, restarts: int = 1, rho: float = 0.75,
                 momentum: float = 0.75, **kwargs):
        kwargs.setdefault("loss", self.default_loss)
        super().__init__(model, eps, **kwargs)
        if steps < 1 or restarts < 1:
            raise ValueError("steps and restarts must be >= 1")
        if not 0 < rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {rho}")
        if not 0 <= momentum <= 1:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        self.steps = steps
        self.restarts = restarts
        self.rho = rho
        self.momentum = momentum

    def extra_settings(self):
        return {"steps": self.steps, "restarts": self.restarts, "rho": self.rho, "momentum": self.momentum,
                "initial_step_size": "2*eps", "checkpoints": checkpoints(self.steps)}

    # -- objective (APGD-T overrides these two) -------------------------------------------------
    def _objective(self, x, y, t):
        return self.objective_and_logits(x, y, t)

    def _is_fooled(self, logits, y, t):
        return self.fooled(logits, y, t)

    def _eval(self, x, y, t, need_grad: bool = True):
        """Per-sample loss, logits and (optionally) the input gradient at x."""
        grad = None
        if need_grad:
            x = x.detach().requires_grad_(True)
            loss, logits = self._objective(x, y, t)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        else:
            with torch.no_grad():
                loss, logits = self._objective(x, y, t)
        if logits is None:  # a custom objective that returns no logits: one more forward pass
            with torch.no_grad():
                logits = self.logits(x)
        return loss.detach(), logits.detach(), grad

    def _start(self, x, eps):
        gen = self.generator(x.device)
        if self.norm == "linf":
            noise = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            return (x + (2 * noise - 1) * eps).clamp_(0.0, 1.0)
        direction = unit_step(torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype), "l2")
        return (x + direction * eps).clamp_(0.0, 1.0)

    # -- one run ----------------------------------------------------------------------------------
    def _run(self, x, y, t, eps):
        """One APGD run from a random start. eps: (B, 1, ...). Returns (x_adv, fooled, best_loss)."""
        B = x.shape[0]
        ckpts = set(checkpoints(self.steps))
        x_out = x.clone()
        out_fooled = torch.zeros(B, dtype=torch.bool, device=x.device)
        out_loss = torch.full((B,), float("-inf"), dtype=x.dtype, device=x.device)
        idx = torch.arange(B, device=x.device)  # original rows still attacked

        xc = self._start(x, eps)
        loss, logits, grad = self._eval(xc, y, t, need_grad=self.steps > 0)
        fooled = self._is_fooled(logits, y, t)
        s = {"x0": x, "y": y, "eps": eps, "step": 2 * eps.expand(B, *eps.shape[1:]).clone(),
             "xc": xc, "xp": xc, "grad": grad, "xb": xc.clone(), "gb": grad.clone(), "lb": loss.clone(),
             "lcur": loss, "lb_ckpt": loss.clone(), "reduced": torch.zeros(B, dtype=torch.bool, device=x.device),
             "incr": torch.zeros(B, dtype=torch.long, device=x.device), "best_fools": fooled.clone(),
             "any_fool": fooled.clone(), "xf": xc.clone()}
        if t is not None:
            s["t"] = t

        def drop_fooled(fooled, s, idx, extra):
            """Early stop: fooled rows keep the current iterate and leave the batch."""
            x_out[idx[fooled]] = s["xc"][fooled]
            out_fooled[idx[fooled]] = True
            keep = ~fooled
            s = {k: v[keep] for k, v in s.items()}
            return s, idx[keep], [None if e is None else e[keep] for e in extra]

        if self.early_stop and bool(fooled.any()):
            s, idx, _ = drop_fooled(fooled, s, idx, [])
        last_ckpt = 0
        offset, total, batch = self._budget
        for k in range(self.steps):
            if idx.numel() == 0:
                break
            self.step(offset + k, total, int(idx.numel()), batch)
            a = 1.0 if k == 0 else self.momentum  # the first step has no momentum
            xc, x0, e = s["xc"], s["x0"], s["eps"]
            z = self.project(xc + s["step"] * unit_step(s["grad"], self.norm), x0, e)
            xn = self.project(xc + a * (z - xc) + (1 - a) * (xc - s["xp"]), x0, e)
            s["xp"], s["xc"] = xc, xn
            loss, logits, grad = self._eval(xn, s["y"], s.get("t"), need_grad=k < self.steps - 1)
            fooled = self._is_fooled(logits, s["y"], s.get("t"))
            if self.early_stop:
                if bool(fooled.any()):
                    s, idx, (loss, grad) = drop_fooled(fooled, s, idx, [loss, grad])
                    if idx.numel() == 0:
                        break
            else:
                s["any_fool"] |= fooled
                s["xf"] = torch.where(_rows(fooled, xn), s["xc"], s["xf"])
            s["grad"] = grad
            self._keep_best(s, loss, grad, fooled)
            if k in ckpts:
                loss = self._checkpoint(s, loss, grad, k - last_ckpt)
                last_ckpt = k
            s["incr"] += (loss > s["lcur"]).long()
            s["lcur"] = loss

        if idx.numel() > 0:
            if self.early_stop:
                x_out[idx] = s["xb"]
            else:  # the best-loss point if it fools, else the last fooling iterate, else the best point
                use_f = s["any_fool"] & ~s["best_fools"]
                x_out[idx] = torch.where(use_f.view(-1, *([1] * (x.dim() - 1))), s["xf"], s["xb"])
                out_fooled[idx] = s["any_fool"]
            out_loss[idx] = s["lb"]
        return x_out, out_fooled, out_loss

    def _keep_best(self, s: dict, loss, grad, fooled) -> None:
        """The best-loss point so far, per row (and whether it fools, when every step runs)."""
        # Per-row selections by torch.where: a masked index-put costs several kernels and allocations,
        # which on a small model is a good part of a step.
        better = loss > s["lb"]
        bv = _rows(better, s["xc"])
        s["xb"] = torch.where(bv, s["xc"], s["xb"])
        s["lb"] = torch.where(better, loss, s["lb"])
        if grad is not None:
            s["gb"] = torch.where(bv, grad, s["gb"])
        if not self.early_stop:
            s["best_fools"] = torch.where(better, fooled, s["best_fools"])

    def _checkpoint(self, s: dict, loss, grad, since: int):
        """At a checkpoint, halve the step of the rows with (1) too few loss increases in the `since` steps
        since the last one, or (2) no halving last time and no progress of the best loss since, and send them
        back to their best point; the loss to count the next increases from."""
        few_increases = s["incr"] < self.rho * since
        stalled = ~s["reduced"] & (s["lb"] <= s["lb_ckpt"])
        red = few_increases | stalled
        rv = _rows(red, s["xc"])
        s["step"] = torch.where(rv, s["step"] / 2, s["step"])
        s["xc"] = torch.where(rv, s["xb"], s["xc"])
        if grad is not None:
            s["grad"] = torch.where(rv, s["gb"], s["grad"])
        s["reduced"], s["lb_ckpt"] = red, s["lb"].clone()
        s["incr"] = torch.zeros_like(s["incr"])
        return torch.where(red, s["lb"], loss)

    def _eps_rows(self, x):
        eps = as_eps(self.eps, x)
        return eps * torch.ones((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)

    def _verify(self, x_adv, y, target, restart):
        """Restart labels from a final forward pass, so they agree with the reported success."""
        with torch.no_grad():
            ok = self._is_fooled(self.logits(x_adv), y, target)
        return torch.where(ok, restart, torch.full_like(restart, -1))

    # (steps taken before this run, steps of the whole call, rows of the call): for progress reports
    _budget: tuple[int, int, int] = (0, 1, 0)

    def perturb(self, x, y, target):
        eps = self._eps_rows(x)
        self._budget = (0, self.restarts * self.steps, x.shape[0])
        x_adv, fooled, best = self._run(x, y, target, eps)
        if self.restarts == 1:
            return x_adv, None  # run() derives the restart from success
        restart = torch.where(fooled, 0, -1)
        for r in range(1, self.restarts):
            if not self._rerun_robust(x, y, target, eps, x_adv, best, fooled, restart, r):
                break
        return x_adv, self._verify(x_adv, y, target, restart)

    def _rerun_robust(self, x, y, target, eps, x_adv, best, fooled, restart, label) -> bool:
        """One more run on the still-robust rows, kept where it fools or raises the loss (updates in place).

        `target` is per row (or None); returns False when no row was left to attack."""
        idx = (~fooled).nonzero().squeeze(1)
        if idx.numel() == 0:
            return False
        t = None if target is None else target[idx]
        self._budget = (self._budget[0] + self.steps, *self._budget[1:])
        xa, f, loss = self._run(x[idx], y[idx], t, eps[idx])
        take = f | (loss > best[idx])
        x_adv[idx[take]] = xa[take]
        best[idx[take]] = loss[take]
        restart[idx[f]] = label
        fooled[idx[f]] = True
        return True


@register_attack
class APGDCE(APGD):
    """APGD with the cross-entropy loss (AutoAttack's first stage)."""

    name = "apgd_ce"
    default_loss = "ce"
    label = "APGD-CE"
    params = (Param("steps", int, 100, "iterations", minimum=1, option="steps"),
              Param("restarts", int, 1, "random restarts", minimum=1, option="restarts"))


@register_attack
class APGDDLR(APGD):
    """APGD with the difference-of-logits-ratio loss (shift- and rescaling-invariant)."""

    name = "apgd_dlr"
    default_loss = "dlr"
    label = "APGD-DLR"
    params = (Param("steps", int, 100, "iterations", minimum=1, option="steps"),
              Param("restarts", int, 1, "random restarts", minimum=1, option="restarts"))


@register_attack
class APGDT(APGD):
    """APGD-T: targeted-DLR APGD towards each of the top wrong classes in turn; untargeted goal."""

    name = "apgd_t"
    targeted_capable = False
    default_loss = "dlr"
    label = "APGD-T"
    params = (Param("steps", int, 100, "iterations per target class", minimum=1, option="steps"),
              Param("restarts", int, 1, "random restarts", minimum=1, option="restarts"),
              Param("n_target_classes", int, 9, "top wrong classes targeted in turn", minimum=1))

    def __init__(self, model, eps=8 / 255, steps: int = 100, restarts: int = 1, n_target_classes: int = 9,
                 **kwargs):
        super().__init__(model, eps, steps=steps, restarts=restarts, **kwargs)
        if self.loss_fn is None:
            raise ValueError("apgd_t needs a named loss (its targeted form is used); got a custom objective")
        if n_target_classes < 1:
            raise ValueError("n_target_classes must be >= 1")
        self.n_target_classes = n_target_classes

    def extra_settings(self):
        return {**super().extra_settings(), "n_target_classes": self.n_target_classes,
                "restarts_per_target": self.restarts}

    def _objective(self, x, y, t):
        logits = self.logits(x)
        return self.loss_fn(logits, y, t), logits  # the targeted form of the loss, towards t

    def _is_fooled(self, logits, y, t):
        return logits.argmax(1) != y  # any wrong class counts, not only t

    def perturb(self, x, y, target):
        eps = self._eps_rows(x)
        with torch.no_grad():
            clean = self.logits(x)
        # Wrong classes by clean logit, highest first (at most K - 1 of them).
        n = min(self.n_target_classes, clean.shape[1] - 1)
        order = clean.masked_fill(F.one_hot(y, clean.shape[1]).bool(), float("-inf")).argsort(1, descending=True)
        x_adv = x.clone()
        best = torch.full((x.shape[0],), float("-inf"), dtype=x.dtype, device=x.device)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        restart = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)
        self._budget = (-self.steps, n * self.restarts * self.steps, x.shape[0])  # each run adds its steps first
        for ti in range(n):
            best.fill_(float("-inf"))  # losses towards different targets are not comparable: keep the latest
            for _ in range(self.restarts):
                if not self._rerun_robust(x, y, order[:, ti], eps, x_adv, best, fooled, restart, ti):
                    return x_adv, self._verify(x_adv, y, None, restart)
        return x_adv, self._verify(x_adv, y, None, restart)
