"""The attack panel's choices -> the `workbench attack` argument list.

Pure (no textual, no torch): the screen collects raw text from its widgets into an `AttackForm`
and `build_args` validates it the way the CLI would, against the attacks' own metadata
(`workbench.attack_meta.AttackMeta`), so a bad value is refused in the UI with one line instead of
surfacing later as a failed background job. The catalog of attacks is the engine's registry:
`load_catalog` / `load_presets` import torch, so the TUI's backend process runs them and sends
`attack_info_to_json`, rebuilt here by `attack_info_from_json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ...attack_meta import NORMS, AttackMeta, check_eps, parse_floats
from ...errors import WorkbenchError


class FormError(ValueError):
    """A choice the CLI would refuse; the message is one line for the UI."""


PRESETS: dict[str, str] = {  # name -> one line; `load_presets` replaces these with the engine's descriptions
    "pcl": "PCL papers: 10-step attacks, no random start, C&W",
    "pc": "PC-LC: FGSM, BIM-10, MIM-40, PGD-40, C&W, SPSA",
    "adr": "ADR: PGD and multi-targeted PGD",
    "ccn": "CCN: FGSM, DeepFool ratios, C&W-L2",
    "strong": "PGD-100x2 CE + CW, then AutoAttack (cascade)",
}
HEADS = ("softmax", "prototype")
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_N = "500"
DEFAULT_EXAMPLES = "8"


@dataclass
class AttackForm:
    """Raw panel choices, as typed; blank text means "the CLI's default"."""

    attacks: list[str] = field(default_factory=list)
    params: dict[str, dict[str, str]] = field(default_factory=dict)  # attack -> parameter -> text
    eps: str = ""
    norm: str = "linf"
    n: str = DEFAULT_N
    preset: str = ""  # "" = none
    strong: bool = False
    head: str = "softmax"
    save_examples: str = DEFAULT_EXAMPLES
    device: str = "auto"


def _list_text(text: str) -> str:
    return ",".join(part.strip() for part in text.split(","))


def parse_eps(text: str, norm: str = "linf") -> list[float] | None:
    """The eps list, or None for the per-dataset default (blank)."""
    if not text.strip():
        return None
    try:
        return check_eps(parse_floats(text, "eps"), norm, "eps")
    except WorkbenchError as exc:
        raise FormError(str(exc)) from None


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


def attack_args(meta: AttackMeta, raw: dict[str, str]) -> list[str]:
    """One attack's arguments: its flag (else --attack NAME) with every field blank, else --attack NAME:k=v,..."""
    given = []
    for p in meta.params:
        text = raw.get(p.name, "").strip()
        if not text:
            continue
        try:
            p.parse(text)
        except ValueError as exc:
            raise FormError(f"{meta.title} {p.name}: {exc}") from None
        given.append(f"{p.name}={_list_text(text) if p.many else text}")
    if given:
        return ["--attack", f"{meta.name}:{','.join(given)}"]
    return [meta.flag] if meta.flag else ["--attack", meta.name]


def build_args(form: AttackForm, catalog: Sequence[AttackMeta]) -> list[str]:
    """The `workbench attack CKPT ...` arguments after the checkpoint; raises FormError with one line."""
    by_name = {m.name: m for m in catalog}
    unknown = [a for a in form.attacks if a not in by_name]
    if unknown:
        raise FormError(f"unknown attack {unknown[0]!r}")
    attacks = [m for m in catalog if m.name in form.attacks]  # catalog order, duplicates dropped
    if not attacks and not form.preset:
        raise FormError("choose at least one attack or a preset")
    if form.preset and form.preset not in PRESETS:
        raise FormError(f"unknown preset {form.preset!r}")
    if form.norm not in NORMS:
        raise FormError(f"norm must be {' or '.join(NORMS)}, not {form.norm!r}")
    if form.head not in HEADS:
        raise FormError(f"head must be softmax or prototype, not {form.head!r}")
    for m in attacks:  # as the CLI: an eps-bounded attack needs the norm; a minimum-norm one keeps its own
        if m.bounded and form.norm not in m.norms:
            raise FormError(f"{m.title} supports norm {'/'.join(m.norms)} only: uncheck it or use norm {m.norms[0]}")
    args = [arg for m in attacks for arg in attack_args(m, form.params.get(m.name, {}))]
    if form.preset:
        args += ["--preset", form.preset]
    # The CLI runs the strong protocol by default with a paper preset: say so explicitly either way.
    if form.strong:
        args.append("--strong")
    elif form.preset and form.preset != "strong":
        args.append("--no-strong")
    if parse_eps(form.eps, form.norm) is not None:
        args += ["--eps", _list_text(form.eps)]
    args += ["--norm", form.norm]
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


# -- the engine's own view (imports torch: call from the backend process) -----------------------

def load_catalog() -> tuple[AttackMeta, ...]:
    """Every registered attack's metadata, plugins included, in registry order."""
    from attacks import all_meta

    return tuple(all_meta())


def attack_info_to_json(info: AttackMeta) -> dict[str, Any]:
    return info.to_json()


def attack_info_from_json(data: dict[str, Any]) -> AttackMeta:
    return AttackMeta.from_json(data)


def load_presets() -> dict[str, str]:
    """Preset name -> the engine's description of its protocol (for MNIST-like data)."""
    from workbench.evaluation import PRESETS as ENGINE_PRESETS, build_protocol

    return {name: build_protocol(name, "mnist").description for name in ENGINE_PRESETS.names()}
