"""FAB: the fast adaptive boundary attack (Croce & Hein, ICML 2020), L-inf and L2, and FAB-T.

Each step linearises the classifier at the current iterate x_k: for the chosen class
l the decision boundary f_l - f_y = 0 becomes the hyperplane w.z = b with
w = grad(f_l - f_y)(x_k), b = w.x_k - (f_l - f_y)(x_k). Untargeted FAB picks the l
whose hyperplane is closest in the attack norm (|f_l - f_y| / ||w||_dual, one backward
per class for the Jacobian); FAB-T linearises f_t - f_y toward a fixed target t (one
backward). Both the iterate and the original point x are projected onto that hyperplane
intersected with the [0, 1] box (`project_hyperplane_box`), and the step is the biased
combination

    x_{k+1} = clip((1 - a)(x_k + eta d_k) + a (x + eta d_0)),
    a = min(||d_k|| / (||d_k|| + ||d_0||), alpha_max),

which stays close to x. Once x_{k+1} is adversarial it is recorded if it is the smallest
perturbation so far and the iterate moves back toward x: x + beta (x_{k+1} - x).

FAB is a minimum-norm attack used eps-bounded (as in AutoAttack): a sample counts as
broken only if the smallest adversarial found has norm <= eps; otherwise the clean input
is returned, so the output always lies in the eps-ball and [0, 1].

Choices:
- Random start as in the reference: the first run starts at x, restarts r >= 1 start
  uniformly at random on the sphere of radius min(best norm so far, eps) / 2 (L-inf:
  uniform noise rescaled to that L-inf norm; L2: a Gaussian direction), clipped to [0, 1].
- Restarts (and FAB-T's further target classes) only run on samples not yet broken within
  eps. With `early_stop` (default) a sample also leaves a run once it has an adversarial
  within eps: further steps could only shrink a perturbation that already counts. With
  `early_stop=False` every run takes all `steps` on every clean-correct sample and keeps
  the smallest adversarial across runs (the pure minimum-norm behaviour).
- FAB-T (`targeted_search=True`, registry "fab_t"): the targets are the top
  `n_target_classes` non-true classes by clean logit (capped at K - 1), tried in order;
  success means misclassification, as in the reference. With `targeted=True` and
  user-given targets t, FAB linearises f_t - f_k against the currently strongest other class
  k (the boundary that must be crossed for t to win) and success means predicting t (no search).
- The `loss` setting is ignored: FAB works on the model's logit differences.
- A per-run result is re-checked with a full-batch forward pass before it is kept.
- Restart index reported for FAB-T: target_rank * restarts + restart.
"""

from __future__ import annotations

import math

import torch

from workbench.attack_meta import Param

from .base import Attack, perturbation_norm
from .registry import register_attack

_TINY_W = 1e-12  # hyperplane-normal coordinates below this are treated as 0 (cannot move w.z)
_BIG = 1e12


def project_hyperplane_box(t: torch.Tensor, w: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """Smallest perturbation d (in `norm`) with w.(t + d) = b and t + d in [0, 1]; rows of (N, D), b (N,).

    With the sign of w chosen so that w.t must grow by c >= 0, the optimum moves every useful
    coordinate toward the side that raises w.z: |d_i| = min(v * r_i, room_i), where room_i is
    the distance to the box face, r_i = 1 for L-inf (v is then the L-inf radius) and r_i = |w_i|
    for L2 (the KKT solution d = clip(v w)). g(v) = w.d(v) is piecewise linear and non-decreasing
    in v with a breakpoint at room_i / r_i per coordinate; sorting the breakpoints gives g at
    each one by cumulative sums, and v follows from the linear piece that reaches c. If the
    hyperplane misses the box, the box corner that gets closest to it is returned.
    """
    c = b - (w * t).sum(1)
    w = torch.where((c < 0)[:, None], -w, w)
    c = c.abs()
    aw = torch.where(w.abs() < _TINY_W, torch.zeros_like(w), w.abs())
    room = torch.where(w > 0, 1.0 - t, t)
    rate = torch.ones_like(aw) if norm == "linf" else aw
    active = aw > 0
    tau = torch.where(active, room / rate.clamp_min(_TINY_W), torch.full_like(aw, _BIG))
    slope = aw * rate  # dg/dv while coordinate i is not yet at its box face
    cap = aw * room  # what coordinate i contributes once saturated
    tau_s, order = tau.sort(1)
    slope_s, cap_s = slope.gather(1, order), cap.gather(1, order)
    saturated = cap_s.cumsum(1) - cap_s  # contribution of coordinates with smaller breakpoints
    moving = slope_s.flip(1).cumsum(1).flip(1)  # total slope of the others
    g = saturated + tau_s * moving  # g at each breakpoint
    reach = g >= c[:, None]
    feasible = reach.any(1)
    k = reach.to(torch.uint8).argmax(1, keepdim=True)  # first breakpoint where g reaches c
    v = (c - saturated.gather(1, k).squeeze(1)) / moving.gather(1, k).squeeze(1).clamp_min(1e-30)
    v = v.clamp_min(0)
    size = torch.where(feasible[:, None], torch.minimum(rate * v[:, None], room), room)
    return torch.where(active, w.sign() * size, torch.zeros_like(size))


@register_attack
class FAB(Attack):
    name = "fab"
    norms = ("linf", "l2")
    label = "FAB"
    summary = "fast adaptive boundary: smallest perturbation, kept within eps"
    params = (Param("steps", int, 100, "iterations", minimum=1, option="steps"),
              Param("restarts", int, 1, "random restarts", minimum=1, option="restarts"))

    def __init__(self, model, eps=8 / 255, norm: str = "linf", steps: int = 100, restarts: int = 1,
                 n_target_classes: int = 9, targeted_search: bool = False, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, **kwargs):
        super().__init__(model, eps, norm=norm, **kwargs)
        if steps < 1 or restarts < 1 or n_target_classes < 1:
            raise ValueError("steps, restarts and n_target_classes must be >= 1")
        if not 0.0 <= alpha_max <= 1.0:
            raise ValueError(f"alpha_max must be in [0, 1], got {alpha_max}")
        if not eta > 0:
            raise ValueError(f"eta must be > 0, got {eta}")
        if not 0.0 < beta <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {beta}")
        self.steps = steps
        self.restarts = restarts
        self.n_target_classes = n_target_classes
        self.targeted_search = targeted_search
        self.alpha_max = alpha_max
        self.eta = eta
        self.beta = beta

    def extra_settings(self):
        out = {"loss": "logit differences (loss setting unused)", "steps": self.steps, "restarts": self.restarts,
               "targeted_search": self.targeted_search, "alpha_max": self.alpha_max, "eta": self.eta,
               "beta": self.beta, "random_start": "restarts >= 1 (first run starts at x)"}
        if self.targeted_search:
            out["n_target_classes"] = self.n_target_classes
        return out

    # -- one linearisation ------------------------------------------------------------------
    def _hyperplane(self, x: torch.Tensor, y: torch.Tensor, cls: torch.Tensor | None,
                    goal: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f_l - f_y)(x) and its input gradient (N, D) for the class l to cross at x, and the logits at x."""
        xg = x.detach().requires_grad_(True)
        logits = self.logits(xg)
        if goal is not None:  # user targets: cross from the strongest other class to the target
            y = logits.detach().scatter(1, goal[:, None], -math.inf).argmax(1)
        z_y = logits.gather(1, y[:, None])
        if cls is not None:  # FAB-T / targeted: only f_t - f_y is needed, one backward pass
            diff = logits.gather(1, cls[:, None]) - z_y
            (g,) = torch.autograd.grad(diff.sum(), xg)
            return diff.squeeze(1).detach(), g.flatten(1), logits.detach()
        n_cls = logits.shape[1]
        # Full Jacobian, one backward per class (samples are independent, so summing over the batch is exact).
        jac = torch.stack([torch.autograd.grad(logits[:, k].sum(), xg, retain_graph=k < n_cls - 1)[0].flatten(1)
                           for k in range(n_cls)], 1)
        rows_ = torch.arange(x.shape[0], device=x.device)
        df = (logits - z_y).detach()
        dg = jac - jac[rows_, y][:, None]
        dual = dg.abs().sum(2) if self.norm == "linf" else dg.norm(dim=2)
        dist = (df.abs() / (dual + 1e-12)).scatter(1, y[:, None], math.inf)
        best = dist.argmin(1)
        return df[rows_, best], dg[rows_, best], logits.detach()

    def _start(self, x0: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
        gen = self.generator(x0.device)
        if self.norm == "linf":
            t = 2 * torch.rand(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype) - 1
        else:
            t = torch.randn(x0.shape, generator=gen, device=x0.device, dtype=x0.dtype)
        size = perturbation_norm(t, self.norm).clamp_min(1e-12)
        scale = (0.5 * radius / size).view(-1, *([1] * (x0.dim() - 1)))
        return (x0 + t * scale).clamp_(0.0, 1.0)

    # Share of rows that moved back at the last check above which the next iterate is checked by a
    # forward pass of its own (the reference's way): re-linearising most rows would cost more.
    _RELINEARISE_MAX = 0.35

    def _run(self, x0, y, cls, goal, eps, radius, random_start):
        """One FAB run from x0 (or a random start); the smallest adversarial found per row and its norm.

        A step needs a forward and a backward pass at the iterate (its linearisation) and tells, by a
        forward pass, whether the new iterate is adversarial. While few rows turn out adversarial, that
        check comes from the next step's forward pass, and only the rows that moved back toward x are
        linearised again; when many do, the check is a no-grad forward pass of its own, as the reference.
        """
        n = x0.shape[0]
        best_x, best = x0.clone(), torch.full((n,), math.inf, device=x0.device, dtype=x0.dtype)
        st = {"x": self._start(x0, torch.minimum(radius, eps)) if random_start else x0.clone(),
              "x0": x0, "y": y, "eps": eps, "idx": torch.arange(n, device=x0.device)}
        if cls is not None:
            st["cls"] = cls
        if goal is not None:
            st["goal"] = goal
        offset, total, batch = self._budget
        unchecked, moved_share = random_start, 0.0  # st["x"] not yet checked; share moved at the last check
        for k in range(self.steps):
            if st["idx"].numel() == 0:
                break
            self.step(offset + k, total, int(st["idx"].numel()), batch)
            df, w, logits = self._hyperplane(st["x"], st["y"], st.get("cls"), st.get("goal"))
            if unchecked:
                moved, moved_share, st, keep = self._check(logits, st, best, best_x)
                if st["idx"].numel() == 0:
                    break
                df, w = df[keep], w[keep]
                if moved.numel() > 0:  # re-linearise the moved rows at their new point
                    df_m, w_m, _ = self._hyperplane(st["x"][moved], st["y"][moved],
                                                    None if "cls" not in st else st["cls"][moved],
                                                    None if "goal" not in st else st["goal"][moved])
                    df, w = df.index_copy(0, moved, df_m), w.index_copy(0, moved, w_m)
            st["x"] = self._fab_step(st["x"], st["x0"], df, w)
            unchecked = moved_share <= self._RELINEARISE_MAX
            if not unchecked:
                with torch.no_grad():
                    logits = self.logits(st["x"])
                _, moved_share, st, _ = self._check(logits, st, best, best_x)
        if unchecked and st["idx"].numel() > 0:  # the last iterate's check
            with torch.no_grad():
                logits = self.logits(st["x"])
            self._check(logits, st, best, best_x)
        return best_x, best

    def _fab_step(self, xa, x0a, df, w):
        """The biased projection step from xa (see the module docstring)."""
        m = xa.shape[0]
        b = (w * xa.flatten(1)).sum(1) - df
        d = project_hyperplane_box(torch.cat((xa.flatten(1), x0a.flatten(1))), torch.cat((w, w)),
                                   torch.cat((b, b)), self.norm)
        size = perturbation_norm(d, self.norm).clamp_min(1e-8)
        d_it, d_or = d[:m].view_as(xa), d[m:].view_as(xa)
        alpha = (size[:m] / (size[:m] + size[m:])).clamp(0.0, self.alpha_max).view(-1, *([1] * (xa.dim() - 1)))
        return ((1 - alpha) * (xa + self.eta * d_it) + alpha * (x0a + self.eta * d_or)).clamp(0.0, 1.0)

    def _check(self, logits, st, best, best_x):
        """Record the adversarial iterates, move them back toward x, and (early stop) drop the rows done.

        Returns (positions of the moved rows in the new state, share of rows moved, the new state, the
        kept positions of the old state)."""
        adv = self.fooled(logits, st["y"], st.get("goal"))
        keep = torch.ones_like(adv)
        if not bool(adv.any()):
            return adv.nonzero().squeeze(1), 0.0, st, keep
        share = float(adv.float().mean())
        xa, x0a, idx = st["x"], st["x0"], st["idx"]
        dist = perturbation_norm(xa - x0a, self.norm)
        better = adv & (dist < best[idx])
        best[idx[better]] = dist[better]
        best_x[idx[better]] = xa[better]
        # Backward step toward x: search for a smaller adversarial from just inside the boundary.
        st["x"] = torch.where(adv.view(-1, *([1] * (xa.dim() - 1))), x0a + self.beta * (xa - x0a), xa)
        if self.early_stop:
            keep = best[idx] > st["eps"]
            if not bool(keep.all()):
                st = {key: v[keep] for key, v in st.items()}
                adv = adv[keep]
        return adv.nonzero().squeeze(1), share, st, keep

    # -- the attack ----------------------------------------------------------------------------
    # (steps taken before this run, steps of the whole call, rows of the call): for progress reports
    _budget: tuple[int, int, int] = (0, 1, 0)

    def perturb(self, x, y, target):
        n = x.shape[0]
        eps = torch.as_tensor(self.eps, dtype=x.dtype, device=x.device).flatten().expand(n).clone()
        with torch.no_grad():
            logits = self.logits(x)
        # Samples already misclassified (or on target) need no perturbation.
        best = torch.where(self.fooled(logits, y, target), 0.0, math.inf).to(x.dtype)
        x_adv = x.clone()
        restart = torch.where(best == 0, 0, -1)

        if target is not None:
            plans = [target]  # user-given targets: linearise toward them, success = hitting them
        elif self.targeted_search:
            others = logits.scatter(1, y[:, None], -math.inf).argsort(1, descending=True)
            plans = [others[:, i] for i in range(min(self.n_target_classes, logits.shape[1] - 1))]
        else:
            plans = [None]  # closest decision boundary at every step

        clean_ok = best > 0
        runs = len(plans) * self.restarts
        for p, cls in enumerate(plans):
            for r in range(self.restarts):
                self._budget = ((p * self.restarts + r) * self.steps, runs * self.steps, n)
                # Minimum-norm mode (no early stop): every run may shrink any sample's perturbation.
                todo = clean_ok & (best > eps) if self.early_stop else clean_ok
                idx = todo.nonzero().squeeze(1)
                if idx.numel() == 0:
                    continue
                cls_r = None if cls is None else cls[idx]
                tgt_r = None if target is None else target[idx]
                x_run, _ = self._run(x[idx], y[idx], cls_r, tgt_r, eps[idx], best[idx], random_start=r > 0)
                with torch.no_grad():  # keep only verified adversarials
                    ok = self.fooled(self.logits(x_run), y[idx], tgt_r)
                dist = torch.where(ok, perturbation_norm(x_run - x[idx], self.norm), math.inf)
                better = dist < best[idx]
                hit = idx[better]
                best[hit], x_adv[hit] = dist[better], x_run[better]
                restart[hit] = p * self.restarts + r
        # Eps-bounded use: a perturbation larger than eps does not count; return the clean input.
        miss = best > eps
        x_adv[miss] = x[miss]
        restart[miss] = -1
        return x_adv, restart


@register_attack
class FABT(FAB):
    """FAB-T as in AutoAttack: FAB toward each of the top `n_target_classes` non-true classes in turn."""

    name = "fab_t"
    label = "FAB-T"
    params = (Param("steps", int, 100, "iterations per target class", minimum=1, option="steps"),
              Param("restarts", int, 1, "random restarts", minimum=1, option="restarts"),
              Param("n_target_classes", int, 9, "top wrong classes targeted in turn", minimum=1))

    def __init__(self, model, eps=8 / 255, norm: str = "linf", steps: int = 100, restarts: int = 1,
                 n_target_classes: int = 9, targeted_search: bool = True, alpha_max: float = 0.1,
                 eta: float = 1.05, beta: float = 0.9, **kwargs):
        super().__init__(model, eps, norm=norm, steps=steps, restarts=restarts, n_target_classes=n_target_classes,
                         targeted_search=targeted_search, alpha_max=alpha_max, eta=eta, beta=beta, **kwargs)
