"""Gradient-masking audit: the sanity checks papers cite to argue their robustness is real.

Each check compares attacks that should be ordered if gradients are informative
(Athalye et al. 2018; Carlini et al. 2019, "On evaluating adversarial robustness"):

1. iterative >= single-step: PGD is at least as strong as FGSM.
2. white-box >= gradient-free: PGD beats Square (score-based, no gradients).
3. white-box >= transfer: PGD beats examples transferred from an independent source.
4. monotone in eps: accuracy does not rise with eps (each eps attacked independently here).
5. unbounded: at a very large eps accuracy reaches about 0.
6. convergence: more steps, restarts or a better optimizer (APGD) do not lower accuracy much.

A `warn` means reported robustness from gradient attacks is likely overstated; it is a
reason to look closer, not a proof of masking. A check is `inconclusive` when it could not
have failed: every accuracy it compares is near 0 (so at that eps there is nothing left to
mask), or the model's clean accuracy is near chance. The verdict is `pass` only when no check
warns and none is inconclusive; an inconclusive verdict names an eps that would be informative.
Thresholds are in accuracy points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..progress.event import ProgressHook
from .audit_eps import audit_eps, choose_audit_eps
from .engine import Evaluator, spec_rows
from .protocol import AttackSpec, Protocol

TOLERANCE = 0.02  # accuracy difference that still counts as "as strong" (two points)
CONVERGENCE_GAP = 0.03  # a stronger budget lowering accuracy by more than this flags non-convergence
UNBOUNDED_MAX = 0.05  # accuracy allowed at the very large eps
FLOOR = 0.05  # compared accuracies all at or below this: the comparison cannot fail (inconclusive)
INFORMATIVE = 0.10  # PGD accuracy clearly above FLOOR: an eps worth auditing at
MIN_CLEAN_OVER_CHANCE = 2.0  # clean accuracy under this multiple of chance: no check can tell anything

__all__ = ["Check", "audit_eps", "audit_model", "audit_protocol", "choose_audit_eps", "run_checks", "verdict"]


@dataclass
class Check:
    name: str
    status: str  # pass | warn | inconclusive | skip
    detail: str


def audit_protocol(eps: float, large: float, queries: int) -> Protocol:
    sweep = sorted({eps / 4, eps / 2, eps, large})
    return Protocol("audit", [
        AttackSpec("fgsm", {}, [eps], "FGSM"),
        # monotone=False: each eps on its own, so a rise with eps shows.
        AttackSpec("pgd", {"steps": 20}, sweep, "PGD-20", monotone=False),
        AttackSpec("pgd", {"steps": 100, "restarts": 5}, [eps], "PGD-100x5"),
        AttackSpec("apgd", {"steps": 100, "loss": "ce"}, [eps], "APGD-CE-100"),
        AttackSpec("square", {"queries": queries}, [eps], f"Square-{queries}"),
    ], "gradient-masking checks")


def _acc(rows: list[dict], label: str, value: float) -> float:
    for r in rows:
        if r["label"] == label and r["value"] is not None and abs(r["value"] - value) < 1e-12:
            return r["robust_accuracy"]
    raise KeyError((label, value))


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def _compare(name: str, ok: bool, compared: list[float], detail: str) -> Check:
    """pass / warn on `ok`, unless every compared accuracy is near 0 and the check could not fail."""
    if all(a <= FLOOR for a in compared):
        return Check(name, "inconclusive", f"{detail}; all <= {_pct(FLOOR)}: cannot fail here")
    return Check(name, "pass" if ok else "warn", detail)


def _pgd_curve(rows: list[dict]) -> list[tuple[float, float]]:
    return [(v, _acc(rows, "PGD-20", v)) for v in sorted(r["value"] for r in rows if r["label"] == "PGD-20")]


def clean_too_low(clean: float, num_classes: int) -> bool:
    return clean < MIN_CLEAN_OVER_CHANCE / max(num_classes, 1)


def run_checks(rows: list[dict], eps: float, large: float, queries: int, transfer: float | None, *,
               clean: float, num_classes: int) -> list[Check]:
    p = _pct
    fgsm, pgd = _acc(rows, "FGSM", eps), _acc(rows, "PGD-20", eps)
    pgd_many, apgd = _acc(rows, "PGD-100x5", eps), _acc(rows, "APGD-CE-100", eps)
    square = _acc(rows, f"Square-{queries}", eps)
    checks = [_compare("iterative >= single-step", pgd <= fgsm + TOLERANCE, [pgd, fgsm],
                       f"PGD-20 {p(pgd)} vs FGSM {p(fgsm)} at eps {eps:g}")]
    # PGD, the attack papers report, against attacks that need no gradients: if gradients are
    # informative PGD wins; if it loses, its numbers come from gradients that mislead it.
    checks.append(_compare("white-box >= gradient-free", pgd <= square + TOLERANCE, [pgd, square],
                           f"PGD-20 {p(pgd)} vs Square {p(square)} at eps {eps:g}"))
    if transfer is None:
        checks.append(Check("white-box >= transfer", "skip", "no source model (give --source CKPT, an "
                                                             "independently trained model)"))
    else:
        checks.append(_compare("white-box >= transfer", pgd <= transfer + TOLERANCE, [pgd, transfer],
                               f"PGD-20 {p(pgd)} vs transfer PGD-40 {p(transfer)} at eps {eps:g}"))
    curve = _pgd_curve(rows)
    rises = [a for (_, a), (_, b) in zip(curve, curve[1:]) if b > a + TOLERANCE]
    # A curve at ~0 from its smallest eps on is flat because nothing is left, not because it is monotone.
    checks.append(_compare("monotone in eps", not rises, [a for _, a in curve],
                           "PGD-20: " + ", ".join(f"{e:g}: {p(a)}" for e, a in curve)))
    # Reaching ~0 is the expected outcome here, so near-0 numbers are the informative case.
    top = _acc(rows, "PGD-20", large)
    checks.append(Check("unbounded reaches 0", "pass" if top <= UNBOUNDED_MAX else "warn",
                        f"PGD-20 at eps {large:g}: {p(top)} (expect <= {p(UNBOUNDED_MAX)})"))
    gap = pgd - min(pgd_many, apgd)
    checks.append(_compare("converged", gap <= CONVERGENCE_GAP, [pgd, pgd_many, apgd],
                           f"PGD-20 {p(pgd)} vs PGD-100x5 {p(pgd_many)} vs APGD-CE-100 {p(apgd)} at eps {eps:g}"))
    if clean_too_low(clean, num_classes):
        # Near chance, every attack starts from almost nothing: even "reaches 0" is then trivially true.
        note = f"clean accuracy {p(clean)} is under {MIN_CLEAN_OVER_CHANCE:g}x chance"
        checks = [c if c.status == "skip" else Check(c.name, "inconclusive", f"{c.detail}; {note}") for c in checks]
    return checks


def informative_eps(rows: list[dict], eps: float) -> tuple[float, float | None]:
    """An eps below `eps` worth auditing at, with PGD-20's accuracy there (None: not measured).

    The largest swept eps where PGD-20 keeps clearly more than FLOOR; if even the smallest is near 0,
    half of it (unmeasured).
    """
    below = [(v, a) for v, a in _pgd_curve(rows) if v < eps]
    kept = [(v, a) for v, a in below if a > INFORMATIVE]
    if kept:
        return kept[-1]
    return (below[0][0] if below else eps) / 2, None


def verdict(checks: list[Check], rows: list[dict], eps: float, clean: float,
            num_classes: int) -> tuple[str, str, float | None]:
    """(verdict, one-line message, informative eps or None). Never "no sign" while a check is inconclusive."""
    statuses = {c.status for c in checks}
    if "warn" in statuses:
        return "warn", "warning: signs of gradient masking; gradient-attack numbers likely overstate robustness", None
    if "inconclusive" not in statuses:
        return "pass", "no sign of gradient masking in these checks", None
    if clean_too_low(clean, num_classes):
        return "inconclusive", (f"inconclusive: clean accuracy {_pct(clean)} is under {MIN_CLEAN_OVER_CHANCE:g}x "
                                f"chance ({_pct(1 / max(num_classes, 1))}), so no check can tell; audit a model "
                                "that has learned the task"), None
    vacuous = sum(c.status == "inconclusive" for c in checks)
    better, acc = informative_eps(rows, eps)
    where = (f"PGD-20 keeps {_pct(acc)} at eps {better:.4g}" if acc is not None
             else "PGD-20 is near 0 already at the smallest swept eps")
    return "inconclusive", (f"inconclusive: {vacuous} check(s) compare accuracies near 0 at eps {eps:g}, so they "
                            f"could not fail; {where}: rerun with --eps {better:.4g}"), better


def audit_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, dataset: str = "mnist",
                eps: float | None = None, large_eps: float | None = None, queries: int = 1000,
                source_model: nn.Module | None = None, batch_size: int = 500, seed: int = 0,
                eps_source: str | None = None, on_progress: ProgressHook | None = None) -> dict[str, Any]:
    """Run the audit at `eps` (default: the dataset's; the CLI picks it from the checkpoint)."""
    if eps is None:
        eps, eps_source = choose_audit_eps(None, dataset)
    large = max(audit_eps(dataset)[1] if large_eps is None else large_eps, eps)
    ev = Evaluator(model, x, y, batch_size=batch_size, seed=seed, on_progress=on_progress)
    protocol = audit_protocol(eps, large, queries)
    ev.spec_count = len(protocol.specs) + (source_model is not None)  # progress events count every attack
    rows = []
    for out in ev.run_protocol(protocol):
        rows += spec_rows(ev, out)
    transfer = None
    if source_model is not None:
        tev = Evaluator(model, x, y, batch_size=batch_size, seed=seed, craft_model=source_model,
                        on_progress=on_progress)
        tev.spec_count, tev.specs_started = ev.spec_count, ev.specs_started
        spec = AttackSpec("pgd", {"steps": 40}, [eps], "transfer PGD-40")
        trows = spec_rows(tev, tev.run_spec(spec, "audit"))
        rows += trows
        transfer = trows[0]["robust_accuracy"]
    clean = float(ev.clean_correct.float().mean())
    with torch.no_grad():
        first = x[:1].float() / 255 if x.dtype == torch.uint8 else x[:1]
        num_classes = int(model(first).shape[-1])
    checks = run_checks(rows, eps, large, queries, transfer, clean=clean, num_classes=num_classes)
    outcome, message, better = verdict(checks, rows, eps, clean, num_classes)
    return {"eps": eps, "eps_source": eps_source or "given", "large_eps": large, "n": len(y),
            "clean_accuracy": clean, "num_classes": num_classes, "checks": [asdict(c) for c in checks],
            "results": rows, "verdict": outcome, "verdict_detail": message, "informative_eps": better}
