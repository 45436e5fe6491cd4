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
reason to look closer, not a proof of masking. Thresholds are in accuracy points.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .engine import Evaluator, spec_rows
from .presets import family
from .protocol import AttackSpec, Protocol

TOLERANCE = 0.02  # accuracy difference that still counts as "as strong" (two points)
CONVERGENCE_GAP = 0.03  # a stronger budget lowering accuracy by more than this flags non-convergence
UNBOUNDED_MAX = 0.05  # accuracy allowed at the very large eps


@dataclass
class Check:
    name: str
    status: str  # pass | warn | skip
    detail: str


def audit_eps(dataset: str) -> tuple[float, float]:
    """(reference eps, very large eps) for a dataset family, L-inf."""
    return (0.3, 0.6) if family(dataset) == "gray" else (8 / 255, 64 / 255)


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


def run_checks(rows: list[dict], eps: float, large: float, queries: int, transfer: float | None) -> list[Check]:
    p = lambda v: f"{100 * v:.1f}%"  # noqa: E731
    fgsm, pgd = _acc(rows, "FGSM", eps), _acc(rows, "PGD-20", eps)
    pgd_many, apgd = _acc(rows, "PGD-100x5", eps), _acc(rows, "APGD-CE-100", eps)
    square = _acc(rows, f"Square-{queries}", eps)
    checks = []

    ok = pgd <= fgsm + TOLERANCE
    checks.append(Check("iterative >= single-step", "pass" if ok else "warn",
                        f"PGD-20 {p(pgd)} vs FGSM {p(fgsm)} at eps {eps:g}"))
    # PGD, the attack papers report, against attacks that need no gradients: if gradients are
    # informative PGD wins; if it loses, its numbers come from gradients that mislead it.
    ok = pgd <= square + TOLERANCE
    checks.append(Check("white-box >= gradient-free", "pass" if ok else "warn",
                        f"PGD-20 {p(pgd)} vs Square {p(square)} at eps {eps:g}"))
    if transfer is None:
        checks.append(Check("white-box >= transfer", "skip", "no source model (give --source CKPT, an "
                                                             "independently trained model)"))
    else:
        ok = pgd <= transfer + TOLERANCE
        checks.append(Check("white-box >= transfer", "pass" if ok else "warn",
                            f"PGD-20 {p(pgd)} vs transfer PGD-40 {p(transfer)} at eps {eps:g}"))
    sweep = sorted(r["value"] for r in rows if r["label"] == "PGD-20")
    curve = [_acc(rows, "PGD-20", v) for v in sweep]
    rises = [(a, b, u, v) for (a, u), (b, v) in zip(zip(sweep, curve), zip(sweep[1:], curve[1:])) if v > u + TOLERANCE]
    checks.append(Check("monotone in eps", "warn" if rises else "pass",
                        "PGD-20: " + ", ".join(f"{e:g}: {p(a)}" for e, a in zip(sweep, curve))))
    top = _acc(rows, "PGD-20", large)
    checks.append(Check("unbounded reaches 0", "pass" if top <= UNBOUNDED_MAX else "warn",
                        f"PGD-20 at eps {large:g}: {p(top)} (expect <= {p(UNBOUNDED_MAX)})"))
    gap = pgd - min(pgd_many, apgd)
    checks.append(Check("converged", "pass" if gap <= CONVERGENCE_GAP else "warn",
                        f"PGD-20 {p(pgd)} vs PGD-100x5 {p(pgd_many)} vs APGD-CE-100 {p(apgd)} at eps {eps:g}"))
    return checks


def audit_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, dataset: str = "mnist",
                eps: float | None = None, large_eps: float | None = None, queries: int = 1000,
                source_model: nn.Module | None = None, batch_size: int = 500, seed: int = 0,
                on_progress=None) -> dict[str, Any]:
    ref, big = audit_eps(dataset)
    eps = ref if eps is None else eps
    large = big if large_eps is None else max(large_eps, eps)
    ev = Evaluator(model, x, y, batch_size=batch_size, seed=seed, on_progress=on_progress)
    rows = []
    for out in ev.run_protocol(audit_protocol(eps, large, queries)):
        rows += spec_rows(ev, out)
    transfer = None
    if source_model is not None:
        tev = Evaluator(model, x, y, batch_size=batch_size, seed=seed, craft_model=source_model,
                        on_progress=on_progress)
        spec = AttackSpec("pgd", {"steps": 40}, [eps], "transfer PGD-40")
        trows = spec_rows(tev, tev.run_spec(spec, "audit"))
        rows += trows
        transfer = trows[0]["robust_accuracy"]
    checks = run_checks(rows, eps, large, queries, transfer)
    clean = float(ev.clean_correct.float().mean())
    return {"eps": eps, "large_eps": large, "n": len(y), "clean_accuracy": clean,
            "checks": [asdict(c) for c in checks], "results": rows,
            "verdict": "warn" if any(c.status == "warn" for c in checks) else "pass"}
