"""The attack panel's choices -> the `workbench attack` argument list.

Pure (no textual, no torch): the screen collects raw text from its widgets into an `AttackForm`
and `build_args` validates it the way the CLI would, against the attacks' own metadata
(`workbench.attack_meta.AttackMeta`), so a bad value is refused in the UI with one line instead of
surfacing later as a failed background job. The catalog of attacks is the engine's registry:
`load_catalog` / `load_presets` import torch, so the TUI's backend process runs them and sends
`attack_info_to_json`, rebuilt here by `attack_info_from_json`.

`form_from_args` reads such an argument list back (a job file records it) for a rerun, and
`fit_to_catalog` drops what the current catalog no longer has from a form that was saved earlier.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ...attack_meta import DEFAULT_ATTACK, NORMS, AttackMeta, check_eps, parse_floats, split_choice
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
    adaptive: bool = False


# The form's one-value options: field -> `workbench attack` option. build_args leaves an option out when
# the field holds its ABSENT value, so an argument list without it reads back as that value: the form's
# default, but for n and examples, whose defaults are the panel's own (the CLI's are all samples and none).
OPTIONS = {"preset": "--preset", "eps": "--eps", "norm": "--norm", "head": "--head", "n": "--n",
           "save_examples": "--save-examples", "device": "--device"}
ABSENT = {**{name: getattr(AttackForm(), name) for name in OPTIONS}, "n": "", "save_examples": "0"}


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
    if form.adaptive and form.head != "softmax":
        raise FormError("adaptive attacks go through the softmax model: use head softmax or uncheck adaptive")
    for m in attacks:  # as the CLI: an eps-bounded attack needs the norm; a minimum-norm one keeps its own
        if m.bounded and form.norm not in m.norms:
            raise FormError(f"{m.title} supports norm {'/'.join(m.norms)} only: uncheck it or use norm {m.norms[0]}")
    args = [arg for m in attacks for arg in attack_args(m, form.params.get(m.name, {}))]
    if form.preset:
        args += [OPTIONS["preset"], form.preset]
    # The CLI runs the strong protocol by default with a paper preset: say so explicitly either way.
    if form.strong:
        args.append("--strong")
    elif form.preset and form.preset != "strong":
        args.append("--no-strong")
    if form.adaptive:
        args.append("--adaptive")
    if parse_eps(form.eps, form.norm) is not None:
        args += [OPTIONS["eps"], _list_text(form.eps)]
    args += [OPTIONS["norm"], form.norm]  # always: the eps mean nothing without it
    if form.head != ABSENT["head"]:
        args += [OPTIONS["head"], form.head]
    n = _count(form.n, "samples n", 1)
    if n is not None:
        args += [OPTIONS["n"], str(n)]
    k = _count(form.save_examples, "save examples", 0)
    if k:
        args += [OPTIONS["save_examples"], str(k)]
    if form.device not in ("", ABSENT["device"]):
        args += [OPTIONS["device"], form.device]
    return args


# -- reading a form back ------------------------------------------------------------------------

_SWITCHES = {"--strong": ("strong", True), "--no-strong": ("strong", False), "--adaptive": ("adaptive", True)}


def form_from_args(args: list[str], catalog: Sequence[AttackMeta]) -> tuple[AttackForm, list[str]]:
    """The form whose `build_args` gives `args` (as a job file records them), and what it could not hold, as
    short phrases. Also reads what the CLI accepts beyond build_args: `--opt=value`, an attack given twice."""
    form = AttackForm(**ABSENT, strong=False)
    flags = {m.flag: m.name for m in catalog if m.flag}
    by_option = {option: name for name, option in OPTIONS.items()}
    missing: list[str] = []
    strong: bool | None = None
    tokens = list(args)
    while tokens:
        arg = tokens.pop(0)
        option, eq, inline = arg.partition("=")
        if option in by_option or option == "--attack":
            value = inline if eq else (tokens.pop(0) if tokens else "")
            if option == "--attack":
                _add_attack(form, value, missing)
            else:
                setattr(form, by_option[option], value)
        elif arg in flags:
            _add_attack(form, flags[arg], missing)
        elif arg in _SWITCHES:
            name, on = _SWITCHES[arg]
            if name == "strong":
                strong = on
            else:
                setattr(form, name, on)
        else:  # an option the form does not have, with its value if one follows
            value = tokens.pop(0) if arg.startswith("--") and tokens and not tokens[0].startswith("--") else ""
            missing.append(f"{arg} {value}".strip())
    if not args:
        missing.append("the job recorded no arguments")
    form.strong = strong if strong is not None else bool(form.preset) and form.preset != "strong"  # as the CLI
    if not form.attacks and not form.preset:
        form.attacks = [DEFAULT_ATTACK]  # what the CLI runs when none is named
    return form, missing


def _add_attack(form: AttackForm, text: str, missing: list[str]) -> None:
    try:
        name, raw = split_choice(text)
    except WorkbenchError:
        missing.append(f"--attack {text}")
        return
    if name in form.attacks:  # the form holds one setting per attack
        missing.append(f"a second {name} ({text})")
        return
    form.attacks.append(name)
    if raw:
        form.params[name] = {key: value.strip() for key, value in raw.items()}


def fit_to_catalog(form: AttackForm, catalog: Sequence[AttackMeta], presets: Sequence[str]) -> list[str]:
    """Make `form` (saved earlier, or read from a past evaluation) fit the panel's choices now, in place:
    an attack, parameter or choice the catalog no longer has is dropped. Returns a phrase per drop."""
    by_name = {m.name: m for m in catalog}
    dropped = [f"attack {a} (no longer registered)" for a in form.attacks if a not in by_name]
    form.attacks = [a for a in form.attacks if a in by_name]
    params: dict[str, dict[str, str]] = {}
    for name, raw in form.params.items():
        meta = by_name.get(name)
        if meta is None:
            continue  # said with its attack (or an unchecked one: nothing to say)
        for key, text in raw.items():
            fitted = _fit_param(meta, key, text)
            if fitted is None:
                dropped.append(f"{meta.title} {key}={text}")
            elif fitted:
                params.setdefault(name, {})[key] = fitted
    form.params = params
    defaults = AttackForm()
    for name, allowed in (("norm", NORMS), ("head", HEADS), ("device", DEVICES), ("preset", ("", *presets))):
        if getattr(form, name) not in allowed:
            dropped.append(f"{name} {getattr(form, name)}")
            setattr(form, name, getattr(defaults, name))
    return dropped


def _fit_param(meta: AttackMeta, key: str, text: str) -> str | None:
    """The text a parameter field can show ("" = its default), or None when the attack has no such
    parameter or its field is a list of choices without this one."""
    param = meta.by_name.get(key)
    if param is None:
        return None
    text = text.strip()
    if not text or not (param.choices or param.type is bool):
        return text  # typed text: build_args checks it when the form runs
    try:
        value = param.parse(text)
    except ValueError:
        return None
    return str(value).lower() if param.type is bool else value


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
