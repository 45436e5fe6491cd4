"""The attack panel's choices -> the `workbench attack` argument list, and the catalog of attacks.

Pure (no textual, no torch): the screen collects raw text from its widgets into an `AttackForm`
and `build_args` validates it the way the CLI would, so a bad value is refused in the UI with one
line instead of surfacing later as a failed background job. `load_catalog` / `load_presets`
consult the engine itself (they import torch): the TUI's backend process runs them and sends
`attack_info_to_json`, rebuilt here by `attack_info_from_json`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any


class FormError(ValueError):
    """A choice the CLI would refuse; the message is one line for the UI."""


@dataclass(frozen=True)
class Param:
    """One CLI option shared by the attacks that read it (the CLI has one --steps for all of them)."""

    key: str
    flag: str
    label: str
    kind: str  # "int" | "float" | "choice" | "floats"
    help: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive lower bound for numbers
    positive: bool = False  # strictly > 0


PARAMS: dict[str, Param] = {p.key: p for p in (
    Param("steps", "--steps", "steps", "int", "iterations of the iterative attacks (blank: each attack's default)",
          minimum=1),
    Param("step_size", "--step-size", "step size", "float", "step of PGD/BIM/MIM/multi-target (blank: per attack)",
          positive=True),
    Param("restarts", "--restarts", "restarts", "int", "random restarts, worst case per sample", minimum=1),
    Param("loss", "--loss", "loss", "choice", "attack loss", choices=("ce", "cw", "dlr")),
    Param("c", "--c", "C&W c", "float", "C&W initial constant", positive=True),
    Param("kappa", "--kappa", "C&W kappa", "float", "C&W confidence margin", minimum=0),
    Param("cw_steps", "--cw-steps", "C&W steps", "int", "C&W / DeepFool iterations", minimum=1),
    Param("search_steps", "--search-steps", "C&W search", "int", "C&W binary-search steps", minimum=1),
    Param("queries", "--queries", "queries", "int", "Square query budget", minimum=1),
    Param("d", "--d", "DeepFool d", "floats", "DeepFool max residue ratios ||eta||/||x||, e.g. 0.1,0.2,0.3"),
)}


@dataclass(frozen=True)
class AttackInfo:
    name: str  # the CLI flag without dashes
    label: str
    params: tuple[str, ...]  # keys of PARAMS this attack reads (workbench/evaluation/custom.py)
    norms: tuple[str, ...]
    description: str
    bounded: bool = True  # False: minimum-norm (C&W, DeepFool), reported at L2 thresholds


_ITER = ("steps", "step_size", "loss")
# Static so the panel composes at once; `load_catalog` refreshes norms and descriptions from the engine.
CATALOG: tuple[AttackInfo, ...] = (
    AttackInfo("fgsm", "FGSM", ("loss",), ("linf",), "one signed-gradient step of size eps"),
    AttackInfo("bim", "BIM", _ITER, ("linf", "l2"), "PGD from the clean input (no random start)"),
    AttackInfo("mim", "MIM", _ITER, ("linf",), "momentum iterative method"),
    AttackInfo("pgd", "PGD", _ITER + ("restarts",), ("linf", "l2"), "PGD with random start"),
    AttackInfo("apgd", "APGD", ("steps", "loss", "restarts"), ("linf", "l2"), "Auto-PGD on the chosen loss"),
    AttackInfo("square", "Square", ("queries", "restarts"), ("linf", "l2"), "score-based random search"),
    AttackInfo("autoattack", "AutoAttack", (), ("linf", "l2"), "APGD-CE, APGD-T, FAB-T, Square"),
    AttackInfo("multitarget", "Multi-target PGD", _ITER, ("linf", "l2"), "targeted PGD toward every other class"),
    AttackInfo("spsa", "SPSA", ("steps",), ("linf",), "gradient-free (finite differences)"),
    AttackInfo("cw", "C&W-L2", ("c", "kappa", "cw_steps", "search_steps"), ("l2",), "Carlini-Wagner, minimum norm",
               bounded=False),
    AttackInfo("deepfool", "DeepFool", ("cw_steps", "d"), ("l2",), "minimum norm; sweeps max residue ratio d",
               bounded=False),
)
ATTACK_NAMES = tuple(a.name for a in CATALOG)
BY_NAME = {a.name: a for a in CATALOG}

PRESETS: dict[str, str] = {  # name -> one line; `load_presets` replaces these with the engine's descriptions
    "pcl": "PCL papers: 10-step attacks, no random start, C&W",
    "pc": "PC-LC: FGSM, BIM-10, MIM-40, PGD-40, C&W, SPSA",
    "adr": "ADR: PGD and multi-targeted PGD",
    "ccn": "CCN: FGSM, DeepFool ratios, C&W-L2",
    "strong": "PGD-100x2 CE + CW, then AutoAttack (cascade)",
}
NORMS = ("linf", "l2")
HEADS = ("softmax", "prototype")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_N = "500"
DEFAULT_EXAMPLES = "8"


@dataclass
class AttackForm:
    """Raw panel choices, as typed; blank text means "the CLI's default"."""

    attacks: list[str] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    eps: str = ""
    norm: str = "linf"
    n: str = DEFAULT_N
    preset: str = ""  # "" = none
    strong: bool = False
    head: str = "softmax"
    save_examples: str = DEFAULT_EXAMPLES
    device: str = "auto"


def parse_floats(text: str, what: str) -> tuple[list[float], str]:
    """'0.1, 0.2' or '8/255,16/255' -> (values, the text the CLI gets); raises FormError on bad input."""
    parts = [p.strip() for p in text.split(",")]
    values = []
    for part in parts:
        try:
            if "/" in part:
                num, den = part.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(part)
        except (ValueError, ZeroDivisionError):
            raise FormError(f"{what}: {part!r} is not a number (use e.g. 0.1,0.2,0.3 or 8/255)") from None
        if not (math.isfinite(value) and value >= 0):
            raise FormError(f"{what}: {part!r} must be a finite number >= 0")
        values.append(value)
    return values, ",".join(parts)


def parse_eps(text: str, norm: str = "linf") -> list[float] | None:
    """The eps list, or None for the per-dataset default (blank)."""
    if not text.strip():
        return None
    values, _ = parse_floats(text, "eps")
    if norm == "linf":
        big = [v for v in values if v > 1]
        if big:
            raise FormError(f"eps {big[0]:g} is larger than the [0, 1] pixel range (L-inf eps: e.g. 0.3 or 8/255)")
    return values


def _number(text: str, p: Param) -> str:
    try:
        value = int(text) if p.kind == "int" else float(text)
    except ValueError:
        raise FormError(f"{p.label}: {text!r} is not {'a whole number' if p.kind == 'int' else 'a number'}") from None
    if not math.isfinite(value) or (p.minimum is not None and value < p.minimum) or (p.positive and value <= 0):
        bound = "> 0" if p.positive else f">= {p.minimum:g}"
        raise FormError(f"{p.label} must be {bound} (got {text})")
    return text


def _count(text: str, what: str, minimum: int) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise FormError(f"{what}: {text!r} is not a whole number") from None
    if value < minimum:
        raise FormError(f"{what} must be >= {minimum} (got {value})")
    return value


def relevant_params(attacks: list[str]) -> list[str]:
    """The PARAMS keys that some chosen attack reads, in PARAMS order (the panel shows only these)."""
    used = {key for name in attacks for key in BY_NAME[name].params}
    return [key for key in PARAMS if key in used]


def build_args(form: AttackForm) -> list[str]:
    """The `workbench attack CKPT ...` arguments after the checkpoint; raises FormError with one line."""
    unknown = [a for a in form.attacks if a not in BY_NAME]
    if unknown:
        raise FormError(f"unknown attack {unknown[0]!r}")
    attacks = [a for a in ATTACK_NAMES if a in form.attacks]  # catalog order, duplicates dropped
    if not attacks and not form.preset:
        raise FormError("choose at least one attack or a preset")
    if form.preset and form.preset not in PRESETS:
        raise FormError(f"unknown preset {form.preset!r}")
    if form.norm not in NORMS:
        raise FormError(f"norm must be linf or l2, not {form.norm!r}")
    if form.head not in HEADS:
        raise FormError(f"head must be softmax or prototype, not {form.head!r}")
    linf_only = [a for a in attacks if BY_NAME[a].norms == ("linf",)]
    if form.norm == "l2" and linf_only:
        raise FormError(f"{BY_NAME[linf_only[0]].label} is an L-inf attack: uncheck it or use norm linf")
    args = [f"--{a}" for a in attacks]
    if form.preset:
        args += ["--preset", form.preset]
    # The CLI runs the strong protocol by default with a paper preset: say so explicitly either way.
    if form.strong:
        args.append("--strong")
    elif form.preset and form.preset != "strong":
        args.append("--no-strong")
    if parse_eps(form.eps, form.norm) is not None:
        args += ["--eps", parse_floats(form.eps, "eps")[1]]
    args += ["--norm", form.norm]
    for key in relevant_params(attacks):
        text = form.params.get(key, "").strip()
        if not text:
            continue
        p = PARAMS[key]
        if p.kind == "choice":
            if text not in p.choices:
                raise FormError(f"{p.label} must be one of {', '.join(p.choices)} (got {text!r})")
        elif p.kind == "floats":
            text = parse_floats(text, p.label)[1]
        else:
            text = _number(text, p)
        args += [p.flag, text]
    if form.head != "softmax":
        args += ["--head", form.head]
    n = _count(form.n, "samples n", 1)
    if n is not None:
        args += ["--n", str(n)]
    k = _count(form.save_examples, "save examples", 0)
    if k:
        args += ["--save-examples", str(k)]
    if form.device not in ("", "auto"):
        args += ["--device", form.device]
    return args


# -- the engine's own view (imports torch: call from a worker) -------------------------------

def load_catalog() -> tuple[AttackInfo, ...]:
    """CATALOG with the norms and first doc line of the engine's attack classes."""
    import sys

    from attacks import ATTACKS

    out = []
    for info in CATALOG:
        if info.name not in ATTACKS:
            out.append(info)
            continue
        cls = ATTACKS.get(info.name)
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip()
        out.append(replace(info, norms=tuple(cls.norms), bounded=bool(cls.bounded),
                           description=doc.splitlines()[0] if doc else info.description))
    return tuple(out)


def attack_info_to_json(info: AttackInfo) -> dict[str, Any]:
    return asdict(info)


def attack_info_from_json(data: dict[str, Any]) -> AttackInfo:
    return AttackInfo(data["name"], data["label"], tuple(data["params"]), tuple(data["norms"]),
                      data["description"], bool(data["bounded"]))


def load_presets() -> dict[str, str]:
    """Preset name -> the engine's description of its protocol (for MNIST-like data)."""
    from workbench.evaluation import PRESETS as ENGINE_PRESETS, build_protocol

    return {name: build_protocol(name, "mnist").description for name in ENGINE_PRESETS.names()}
