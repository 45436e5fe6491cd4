"""The `custom` protocol: the attacks picked on the command line, with shared options.

Each attack name maps to a small builder that reads only the options that apply to it,
so `--steps 20` changes PGD/BIM/MIM/APGD/multi-target iterations and leaves C&W alone
unless asked (`--cw-steps`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import WorkbenchError
from .protocol import AttackSpec, Protocol


@dataclass
class AttackOptions:
    eps: list[float]
    norm: str = "linf"
    steps: int | None = None  # None: each attack's own default
    step_size: float | None = None
    restarts: int = 1
    loss: str = "ce"
    c: float | None = None
    kappa: float = 0.0
    lr: float | None = None
    cw_steps: int | None = None
    search_steps: int | None = None
    queries: int | None = None
    ratios: list[float] | None = None  # DeepFool max residue ratios d
    seed: int = 0


def _given(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


def _iterative(o: AttackOptions) -> dict[str, Any]:
    return _given(steps=o.steps, step_size=o.step_size, loss=o.loss)


BUILDERS: dict[str, Callable[[AttackOptions], AttackSpec]] = {
    "fgsm": lambda o: AttackSpec("fgsm", {"loss": o.loss}, o.eps, "FGSM"),
    "bim": lambda o: AttackSpec("bim", {**_iterative(o), "norm": o.norm}, o.eps, "BIM"),
    "mim": lambda o: AttackSpec("mim", _iterative(o), o.eps, "MIM"),
    "pgd": lambda o: AttackSpec("pgd", {"steps": 40, **_iterative(o), "norm": o.norm, "restarts": o.restarts}, o.eps,
                                f"PGD{'-' + o.norm if o.norm != 'linf' else ''}"),
    "apgd": lambda o: AttackSpec("apgd", {**_given(steps=o.steps), "loss": o.loss, "norm": o.norm,
                                          "restarts": o.restarts}, o.eps, f"APGD-{o.loss.upper()}"),
    "square": lambda o: AttackSpec("square", {**_given(queries=o.queries), "norm": o.norm, "restarts": o.restarts},
                                   o.eps, "Square"),
    "autoattack": lambda o: AttackSpec("autoattack", {"norm": o.norm, "version": "standard"}, o.eps, "AutoAttack"),
    "multitarget": lambda o: AttackSpec("multitarget", {**_iterative(o), "norm": o.norm}, o.eps,
                                        "Multi-targeted PGD"),
    "spsa": lambda o: AttackSpec("spsa", _given(steps=o.steps), o.eps, "SPSA"),
    "cw": lambda o: AttackSpec("cw", _given(c=o.c, kappa=o.kappa, lr=o.lr, steps=o.cw_steps,
                                            search_steps=o.search_steps), None, "C&W-L2",
                               thresholds=o.eps if o.norm == "l2" else None),
    "deepfool": lambda o: AttackSpec("deepfool", _given(steps=o.cw_steps), o.ratios, "DeepFool",
                                     thresholds=o.eps if o.norm == "l2" else None),
}

LINF_ONLY = {"fgsm", "mim", "spsa"}


def custom_protocol(names: list[str], options: AttackOptions) -> Protocol:
    specs = []
    for name in names:
        if options.norm != "linf" and name in LINF_ONLY:
            raise WorkbenchError(f"--{name} is an L-inf attack; drop it or use --norm linf")
        specs.append(BUILDERS[name](options))
    return Protocol("custom", specs, "attacks chosen on the command line")
