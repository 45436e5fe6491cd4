"""DeepFool, L2 (Moosavi-Dezfooli et al., 2016): a minimum-norm attack by iterated linearisation.

Per sample, while the prediction is still y: for the candidate classes k != y,
f_k = Z_k - Z_y and w_k = grad_x f_k at the current iterate; take l = argmin_k |f_k| / ||w_k||,
the step r = |f_l| w_l / ||w_l||^2, accumulate r_tot += r and set
x_t = clip_[0,1](x + (1 + overshoot) r_tot) (the original paper's overshoot on the total, as in the
authors' code; torchattacks applies it to each step instead).

Candidates are the `num_classes` most likely classes at the clean input (y and the top
num_classes - 1 others; Foolbox v1 uses 10, which is every class on MNIST/CIFAR-10).
The k - 1 gradients come from k - 1 backward passes over the active batch.

Max residue ratio d (the CCN paper's Eq. 8, `max_ratio`; float or one value per sample):
the iterations go on until the prediction changes or ||x_t - x||_2 / ||x||_2 >= d (the paper's
wording), with ||x|| on raw [0, 1] pixels. A sample is robust if it is still correct when it
stops. So a returned example may pass d by its last step: its ratio is
< d + last_step_ratio, where last_step_ratio = ||x_t - x_{t-1}||_2 / ||x||_2 (<= (1 + overshoot)
||r_{t-1}||_2 / ||x||_2, clipping being non-expansive). `strict_ratio=True` instead counts an
example with ratio > d as a failure, so every returned ratio is <= d.

Returns the clean x for samples it did not fool (after `steps` iterations or at the ratio
limit), like advertorch's minimum-norm attacks; samples fooled at the clean input are left
unchanged, and fooled samples leave the batch. The examples are re-checked in one forward pass
over the whole batch (the pass run() makes): a boundary case that flips back there is a failure.
After a call, `last_ratio` holds each sample's ||x_adv - x||_2 / ||x||_2 (0 where x is returned)
and `last_step_ratio` as above.
The CCN robustness rho_adv (Eq. 9) is `rho_adv(result, x)`: the mean ratio over samples that
were correct on the clean input and fooled.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from workbench.attack_meta import Param

from .base import Attack, AttackResult, rows
from .registry import register_attack


def residue_ratio(x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per sample ||x_adv - x||_2 / ||x||_2 (on the given pixels)."""
    return (x_adv - x).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)


def rho_adv(result: AttackResult, x: torch.Tensor) -> float:
    """CCN's rho_adv: mean ||x_adv - x|| / ||x|| over clean-correct samples the attack fooled (nan if none)."""
    sel = result.clean_correct & result.success
    if not bool(sel.any()):
        return float("nan")
    return float(residue_ratio(result.x_adv[sel], x[sel]).mean())


@register_attack
class DeepFool(Attack):
    name = "deepfool"
    norms = ("l2",)
    bounded = False
    targeted_capable = False
    sweep_param = "max_ratio"
    flag = "--deepfool"
    label = "DeepFool"
    summary = "minimum-norm L2 steps to the nearest boundary, swept over max residue ratio d"
    params = (Param("steps", int, 50, "iterations", minimum=1, option="cw_steps"),
              Param("overshoot", float, 0.02, "overshoot past the boundary", minimum=0),
              Param("max_ratio", float, (0.1, 0.2, 0.3, 0.4, 0.5), "max residue ratios ||eta||/||x|| swept",
                    minimum=0, many=True, option="d"))

    def __init__(self, model, eps: float | torch.Tensor | None = None, steps: int = 50, overshoot: float = 0.02,
                 num_classes: int | None = 10, max_ratio: float | torch.Tensor | None = None,
                 strict_ratio: bool = False, **kwargs):
        kwargs.setdefault("loss", "cw")
        if kwargs["loss"] != "cw":
            raise ValueError("deepfool works on logit differences; loss must be 'cw'")
        super().__init__(model, eps, **kwargs)
        if eps is not None:
            raise ValueError("deepfool is a minimum-norm attack and takes no eps (see max_ratio)")
        if steps < 1:
            raise ValueError("steps must be >= 1")
        if not (math.isfinite(overshoot) and overshoot >= 0):
            raise ValueError(f"overshoot must be a finite number >= 0, got {overshoot!r}")
        if num_classes is not None and num_classes < 2:
            raise ValueError("num_classes must be >= 2 (or None for all classes)")
        if max_ratio is not None:
            values = max_ratio.flatten().tolist() if isinstance(max_ratio, torch.Tensor) else [max_ratio]
            if not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 for v in values):
                raise ValueError(f"max_ratio must be finite numbers >= 0, got {max_ratio!r}")
        self.steps, self.overshoot, self.num_classes = steps, float(overshoot), num_classes
        self.max_ratio, self.strict_ratio = max_ratio, strict_ratio
        self.last_ratio: torch.Tensor | None = None
        self.last_step_ratio: torch.Tensor | None = None

    def extra_settings(self):
        d = self.max_ratio
        if isinstance(d, torch.Tensor):
            d = d.flatten().tolist() if d.numel() > 1 else float(d)
        return {"loss": "logit differences", "steps": self.steps, "overshoot": self.overshoot,
                "num_classes": self.num_classes, "max_ratio": d, "strict_ratio": self.strict_ratio}

    def perturb(self, x, y, target):
        n = x.shape[0]
        with torch.no_grad():
            logits0 = self.logits(x)
        k = logits0.shape[1] if self.num_classes is None else min(self.num_classes, logits0.shape[1])
        others = logits0.masked_fill(F.one_hot(y, logits0.shape[1]).bool(), float("-inf"))
        cand = others.topk(k - 1, dim=1).indices  # (n, k-1) candidate classes != y

        x_norm = x.flatten(1).norm(dim=1).clamp_min(1e-12)
        d = None if self.max_ratio is None else torch.as_tensor(self.max_ratio, dtype=x.dtype, device=x.device)
        x_adv = x.clone()
        ratio_out = torch.zeros(n, dtype=x.dtype, device=x.device)
        step_out = torch.zeros(n, dtype=x.dtype, device=x.device)

        idx = (logits0.argmax(1) == y).nonzero().squeeze(1)  # fooled at the clean input: unchanged
        x0, ya, ca, xn, da = x[idx], y[idx], cand[idx], x_norm[idx], rows(d, idx)
        xa, r_tot, last = x0.clone(), torch.zeros_like(x0), torch.zeros_like(x_norm[idx])
        for it in range(self.steps + 1):
            if idx.numel() == 0:
                break
            self.step(it, self.steps + 1, int(idx.numel()), n)
            xa = xa.detach().requires_grad_(True)
            logits = self.logits(xa)
            with torch.no_grad():
                fooled = logits.argmax(1) != ya
                ratio = (xa - x0).flatten(1).norm(dim=1) / xn
                win = fooled
                stop = fooled.clone()
                if da is not None:
                    stop |= ratio >= da
                    if self.strict_ratio:
                        win = fooled & (ratio <= da)
                if it == self.steps:
                    stop[:] = True
                if bool(win.any()):
                    g = idx[win]
                    x_adv[g], ratio_out[g], step_out[g] = xa[win].detach(), ratio[win], last[win]
            keep = ~stop
            if not bool(keep.any()):
                break
            # Gradients of the k-1 logit differences (dropped rows ride along in this backward only).
            z_y = logits.gather(1, ya[:, None])
            f = logits.gather(1, ca) - z_y  # (b, k-1)
            grads = torch.stack([torch.autograd.grad(f[:, j].sum(), xa, retain_graph=j < f.shape[1] - 1)[0]
                                 for j in range(f.shape[1])], dim=1)  # (b, k-1, ...)
            with torch.no_grad():
                f, grads = f[keep].detach(), grads[keep]
                idx, x0, ya, ca, xn, r_tot = idx[keep], x0[keep], ya[keep], ca[keep], xn[keep], r_tot[keep]
                xa = xa.detach()[keep]
                da = rows(da, keep) if da is not None and da.dim() > 0 else da
                w_norm = grads.flatten(2).norm(dim=2).clamp_min(1e-12)  # (b, k-1)
                near = (f.abs() / w_norm).argmin(1)  # the closest linearised boundary
                sel = torch.arange(len(near), device=x.device)
                f_l, w_l, wn_l = f[sel, near].abs(), grads[sel, near], w_norm[sel, near]
                r_tot = r_tot + (f_l / wn_l.pow(2)).view(-1, *([1] * (x.dim() - 1))) * w_l
                x_new = (x0 + (1 + self.overshoot) * r_tot).clamp(0.0, 1.0)
                last = (x_new - xa).flatten(1).norm(dim=1) / xn
                xa = x_new

        with torch.no_grad():  # a boundary case must also hold up in the full-batch pass run() makes
            lost = (self.logits(x_adv).argmax(1) == y) & (ratio_out > 0)
        x_adv[lost], ratio_out[lost], step_out[lost] = x[lost], 0.0, 0.0
        self.last_ratio, self.last_step_ratio = ratio_out, step_out
        return x_adv, None
