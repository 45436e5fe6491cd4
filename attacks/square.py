"""Square Attack (Andriushchenko et al., ECCV 2020): score-based black-box random search, L-inf and L2.

Gradient-free: the model is only queried forward, under `torch.no_grad()`. Each sample
keeps its best point x_best and its loss (the margin z_y - max_{k!=y} z_k by default,
targeted: max_{k!=t} z_k - z_t; "ce" gives -CE / CE(target) as the reference). Every
iteration proposes one random square update per sample and keeps it if the loss goes down
or the sample becomes misclassified; a sample is no longer queried once fooled.

- Square side: s = round(sqrt(p * H * W)) with p from the published piecewise-constant
  schedule (p_init halved at 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 of 10,000
  iterations), rescaled to the budget: iteration i reads the schedule at i / queries * 10000.
- L-inf: vertical-stripe start (each column of each channel at x +- eps); an update sets a
  random s x s window (s <= H - 1) to x +- eps with one random sign per channel, resampling
  the signs when the window would not change (as the original code).
- L2: start from a 5 x 5 grid of +-"pseudo-Gaussian" squares scaled to norm eps; an update
  moves the mass of a second random window into a first one (new content: a random-signed
  pseudo-Gaussian square plus the window's old direction, with norm sqrt(budget left / C +
  both windows' old norm^2) per channel), zeroes the second window and rescales to norm eps.
  s is odd and >= 3.

Choices: windows (positions, and the transposition of the L2 pattern) are drawn per sample
rather than once per batch, so a sample's search does not depend on its batch. `queries`
is the exact budget of forward passes per sample and restart, the initial point included.
`last_queries` holds, after a call, the queries each sample used (summed over restarts; 0
for samples misclassified already, which are not attacked). Square always stops querying
a fooled sample, whatever `early_stop` says. Inputs must be images (B, C, H, W).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from workbench.attack_meta import Param

from .base import Attack
from .registry import register_attack

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))
_RESAMPLE = 10  # L-inf: tries to draw signs that change the window


def _rectangles(h: int, w: int) -> torch.Tensor:
    """Concentric rectangles around the centre, weight 1/(k+1)^2 for ring k, unit L2 norm."""
    d = torch.zeros(h, w, dtype=torch.float64)
    ch, cw = h // 2, w // 2
    for k in range(max(ch, cw) + 1):
        r0, c0 = ch - k, cw - k
        d[max(r0, 0):min(r0 + 2 * k + 1, h), max(c0, 0):min(c0 + 2 * k + 1, w)] += 1.0 / (k + 1) ** 2
    return d / d.norm() if d.numel() else d


@lru_cache(maxsize=64)
def _pseudo_gaussian(s: int) -> torch.Tensor:
    """The s x s L2 update pattern: two half-squares of opposite sign, unit L2 norm (float64, CPU)."""
    d = torch.cat((_rectangles(s // 2, s), -_rectangles(s - s // 2, s)))
    return d / d.norm()


def _window_mask(vh: torch.Tensor, vw: torch.Tensor, s: int, h: int, w: int) -> torch.Tensor:
    """(N, 1, H, W) bool: the s x s window at (vh, vw) of each row."""
    ar_h = torch.arange(h, device=vh.device)
    ar_w = torch.arange(w, device=vw.device)
    rows = (ar_h >= vh[:, None]) & (ar_h < vh[:, None] + s)
    cols = (ar_w >= vw[:, None]) & (ar_w < vw[:, None] + s)
    return (rows[:, :, None] & cols[:, None, :])[:, None]


def _window_index(vh: torch.Tensor, vw: torch.Tensor, s: int):
    ar = torch.arange(s, device=vh.device)
    n = torch.arange(vh.shape[0], device=vh.device)
    return n[:, None, None], (vh[:, None] + ar)[:, :, None], (vw[:, None] + ar)[:, None, :]


@register_attack
class Square(Attack):
    name = "square"
    needs_input_grad = False
    norms = ("linf", "l2")
    flag = "--square"
    label = "Square"
    summary = "score-based random search (no gradients)"
    params = (Param("queries", int, 5000, "query budget", minimum=1, option="queries"),
              Param("restarts", int, 1, "random restarts", minimum=1, option="restarts"),
              Param("p_init", float, 0.8, "initial fraction of pixels changed", positive=True))

    def __init__(self, model, eps=8 / 255, norm: str = "linf", queries: int = 5000, p_init: float = 0.8,
                 restarts: int = 1, loss="margin", **kwargs):
        # "margin" is the C&W logit margin, registered as "cw" (maximised; we minimise its negative).
        super().__init__(model, eps, norm=norm, loss="cw" if loss == "margin" else loss, **kwargs)
        if queries < 1 or restarts < 1:
            raise ValueError("queries and restarts must be >= 1")
        if not 0.0 < p_init <= 1.0:
            raise ValueError(f"p_init must be in (0, 1], got {p_init}")
        self.queries = queries
        self.p_init = p_init
        self.restarts = restarts
        self.last_queries: torch.Tensor | None = None

    def extra_settings(self):
        loss = "margin" if self.loss == "cw" else None
        out = {"queries": self.queries, "p_init": self.p_init, "restarts": self.restarts,
               "schedule": "piecewise p, rescaled from 10000 iterations", "windows": "per sample"}
        return {**({"loss": loss} if loss else {}), **out}

    def _p(self, it: int) -> float:
        i = int(it / self.queries * 10000)
        for bound, div in _SCHEDULE:
            if i <= bound:
                return self.p_init / div
        return self.p_init / 512

    def _loss(self, x, y, target):
        """Loss to minimise and whether the goal is met, one query per row."""
        value, logits = self.objective_and_logits(x, y, target)
        if logits is None:
            logits = self.logits(x)
        return -value, self.fooled(logits, y, target)

    def _sign(self, shape, gen, like):
        return (2 * torch.randint(0, 2, shape, generator=gen, device=like.device) - 1).to(like.dtype)

    # -- L-inf ----------------------------------------------------------------------------
    def _linf_init(self, x, eps, gen):
        n, c, _, w = x.shape
        return (x + eps * self._sign((n, c, 1, w), gen, x)).clamp(0.0, 1.0)

    def _linf_step(self, x, x_best, eps, p, gen):
        """x_best with one random s x s window per row set to x +- eps (one sign per channel).

        Signs that would leave the window unchanged waste a query, so up to `_RESAMPLE` sign draws
        are made at once and each row takes its first draw that changes something (the original
        code's resampling loop, without a host sync per try). Only the windows are computed on.
        """
        n, c, h, w = x.shape
        s = min(max(round(math.sqrt(p * h * w)), 1), max(min(h, w) - 1, 1))
        vh = torch.randint(0, h - s + 1, (n,), generator=gen, device=x.device)
        vw = torch.randint(0, w - s + 1, (n,), generator=gen, device=x.device)
        rows, hh, ww = _window_index(vh, vw, s)  # (n, 1, 1), (n, s, 1), (n, 1, s)
        xw = x[rows, :, hh, ww]  # (n, s, s, c): advanced indices first, then the channel
        bw = x_best[rows, :, hh, ww]
        e = eps.view(n, 1, 1, 1)
        signs = self._sign((_RESAMPLE, n, 1, 1, c), gen, x)
        trial = (xw + e * signs).clamp(0.0, 1.0)  # (R, n, s, s, c)
        changes = ((trial - bw).abs() >= 1e-7).flatten(2).any(2)  # (R, n)
        first = changes.to(torch.uint8).argmax(0)  # first draw that changes the window (0 if none does)
        window = trial[first, torch.arange(n, device=x.device)]
        cand = x_best.clone()
        cand[rows, :, hh, ww] = window
        return cand

    # -- L2 -------------------------------------------------------------------------------------
    def _pattern(self, s, n, gen, like):
        """(n, 1, s, s) pseudo-Gaussian squares, each transposed with probability 1/2."""
        base = _pseudo_gaussian(s).to(device=like.device, dtype=like.dtype)
        flip = torch.rand(n, generator=gen, device=like.device) > 0.5
        return torch.where(flip[:, None, None], base.t(), base)[:, None]

    def _l2_init(self, x, eps, gen):
        n, c, h, w = x.shape
        s = max(h // 5, 1)
        delta = torch.zeros_like(x)
        r0 = (h - 5 * s) // 2
        for i in range(h // s):
            c0 = (w - 5 * s) // 2
            for _ in range(w // s):
                if r0 >= 0 and c0 >= 0 and r0 + s <= h and c0 + s <= w:
                    pattern = self._pattern(s, n, gen, x) * self._sign((n, c, 1, 1), gen, x)
                    delta[:, :, r0:r0 + s, c0:c0 + s] += pattern
                c0 += s
            r0 += s
        return (x + self._l2_scale(delta, eps)).clamp(0.0, 1.0)

    @staticmethod
    def _l2_scale(delta, eps):
        return delta / delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1) * eps

    def _l2_step(self, x, x_best, eps, p, gen):
        n, c, h, w = x.shape
        s = max(round(math.sqrt(p * h * w)), 3)
        s = min(s + 1 - s % 2, min(h, w))  # odd, and fits the image
        delta = x_best - x
        vh1, vw1, vh2, vw2 = (torch.randint(0, size - s + 1, (n,), generator=gen, device=x.device)
                              for size in (h, w, h, w))
        m1, m2 = _window_mask(vh1, vw1, s, h, w), _window_mask(vh2, vw2, s, h, w)
        idx1 = _window_index(vh1, vw1, s)
        # Norms: window 1 per channel, the whole perturbation, and both windows together per channel.
        norm_w1 = (delta * m1).square().sum((2, 3), keepdim=True).sqrt()
        norm_img = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        norm_both = (delta * (m1 | m2)).square().sum((2, 3), keepdim=True).sqrt()
        new = self._pattern(s, n, gen, x) * self._sign((n, c, 1, 1), gen, x)
        new = new + delta[idx1[0], :, idx1[1], idx1[2]].permute(0, 3, 1, 2) / (1e-10 + norm_w1)
        budget = ((eps ** 2 - norm_img ** 2).clamp_min(0) / c + norm_both ** 2).sqrt()
        new = new / new.square().sum((2, 3), keepdim=True).sqrt().clamp_min(1e-12) * budget
        delta = delta.masked_fill(m2, 0.0)  # window 2 gives its mass to window 1
        delta[idx1[0], :, idx1[1], idx1[2]] = new.permute(0, 2, 3, 1)
        return (x + self._l2_scale(delta, eps)).clamp(0.0, 1.0)

    # -- the attack ---------------------------------------------------------------------------
    def _run(self, x, y, target, eps, gen):
        """One search over the budget: (best point, its loss, fooled, queries used) per row.

        The rows still searched are kept compact (x, x_best, loss, eps of the active rows only) and
        shrink only when a row is fooled, so a query costs its forward pass plus the proposal.
        """
        init, step = (self._linf_init, self._linf_step) if self.norm == "linf" else (self._l2_init, self._l2_step)
        x_best = init(x, eps, gen)
        loss, fooled = self._loss(x_best, y, target)
        n = x.shape[0]
        used = torch.ones(n, dtype=torch.long, device=x.device)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        out_x, out_loss = x_best, loss.clone()
        idx = torch.arange(n, device=x.device)  # original rows still searched
        xa, xb, ya, ta, ea, la = x, x_best, y, target, eps, loss
        offset, total, batch = self._budget
        iters = 0  # queries made after the initial one
        for it in range(self.queries - 1):
            if bool(fooled.any()):  # fooled rows keep their point and leave
                leave = idx[fooled]
                out_x[leave], out_loss[leave], used[leave], done[leave] = xb[fooled], la[fooled], 1 + it, True
                keep = ~fooled
                idx, xa, xb, ya, ea, la, fooled = idx[keep], xa[keep], xb[keep], ya[keep], ea[keep], la[keep], fooled[keep]
                ta = None if ta is None else ta[keep]
                if idx.numel() == 0:
                    break
            self.step(offset + it + 1, total, int(idx.numel()), batch)
            cand = step(xa, xb, ea, self._p(it), gen)
            new_loss, fooled = self._loss(cand, ya, ta)
            improved = new_loss < la
            la = torch.where(improved, new_loss, la)
            xb = torch.where((improved | fooled).view(-1, 1, 1, 1), cand, xb)
            iters = it + 1
        if idx.numel() > 0:
            out_x[idx], out_loss[idx], used[idx], done[idx] = xb, la, 1 + iters, fooled
        return out_x, out_loss, done, used

    # (queries spent before this run, queries of the whole call, rows of the call): for progress reports
    _budget: tuple[int, int, int] = (0, 1, 0)

    def perturb(self, x, y, target):
        if x.dim() != 4:
            raise ValueError(f"square needs image batches (B, C, H, W), got shape {tuple(x.shape)}")
        n = x.shape[0]
        gen = self.generator(x.device)
        eps = torch.as_tensor(self.eps, dtype=x.dtype, device=x.device).flatten().expand(n).reshape(-1, 1, 1, 1)
        used = torch.zeros(n, dtype=torch.long, device=x.device)
        with torch.no_grad():
            fooled = self.fooled(self.logits(x), y, target)
            restart = torch.where(fooled, 0, -1)
            x_adv, best_loss = x.clone(), torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
            for r in range(self.restarts):
                idx = (~fooled).nonzero().squeeze(1)
                if idx.numel() == 0:
                    break
                t = None if target is None else target[idx]
                self._budget = (r * self.queries, self.restarts * self.queries, n)
                x_run, loss, ok, q = self._run(x[idx], y[idx], t, eps[idx], gen)
                used[idx] += q
                keep = ok | (loss < best_loss[idx])  # not fooled: the lowest-loss point of any restart
                x_adv[idx[keep]] = x_run[keep]
                best_loss[idx[keep]] = loss[keep]
                fooled[idx[ok]] = True
                restart[idx[ok]] = r
        self.last_queries = used
        return x_adv, restart
