"""What an attack says about itself, as plain data: its shorthand flag, label, parameters and norms.

Each attack class (attacks/*.py) declares class attributes beside its `name`, `norms` and `bounded`:

    flag = "--pgd"                       # shorthand for `--attack pgd` (optional; not inherited)
    label = "PGD{norm:suffix}"           # report label; {param} fields, `:upper`, `:suffix` (see `_Field`)
    summary = "PGD with random start"    # one line for listings
    params = (Param("steps", int, 40, "iterations", minimum=1, option="steps"), ...)

`describe(cls)` reads them into an `AttackMeta`. The CLI (`--attack NAME:key=value,...`, `workbench
attacks`), the custom protocol and the TUI's attack form all work from it; the TUI gets it as JSON from
its backend process. No torch here, so the CLI and the TUI import this module freely.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import WorkbenchError

NORMS = ("linf", "l2")  # every norm an attack may support
DEFAULT_ATTACK = "pgd"  # what `workbench attack` runs when no attack (and no preset) is named
# The options of `workbench attack` that an attack parameter may follow (`Param.option`): `--steps 20`
# sets every chosen attack's parameter that declares option="steps", unless --attack NAME:key=... says otherwise.
SHARED_OPTIONS = ("steps", "step_size", "restarts", "loss", "c", "kappa", "lr", "cw_steps", "search_steps",
                  "queries", "d")
# Set by the evaluation for every attack, so never a declared parameter.
RESERVED = ("model", "eps", "norm", "seed", "targeted", "model_training", "early_stop", "precision")

_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_NAME = re.compile(r"[a-z][a-z0-9_]*$")
_FLAG = re.compile(r"--[a-z][a-z0-9-]*$")


def _number(text: str) -> float:
    """A float, or a fraction like 8/255; ValueError otherwise."""
    if "/" in text:
        num, den = text.split("/", 1)
        return float(num) / float(den)
    return float(text)


def parse_floats(text: str, what: str) -> list[float]:
    """'0.1, 0.2' or '8/255,16/255' -> finite numbers >= 0; anything else is a one-line WorkbenchError."""
    values = []
    for part in (p.strip() for p in text.split(",")):
        try:
            value = _number(part)
        except (ValueError, ZeroDivisionError):
            raise WorkbenchError(f"{what}: {part!r} is not a number (use e.g. 0.1,0.2,0.3 or 8/255)") from None
        if not (math.isfinite(value) and value >= 0):
            raise WorkbenchError(f"{what}: {part!r} must be a finite number >= 0")
        values.append(value)
    return values


def check_eps(values: list[float], norm: str, what: str = "--eps") -> list[float]:
    """Refuse a norm outside NORMS and an L-inf eps above the [0, 1] pixel range (an eps in 0..255 units)."""
    if norm not in NORMS:
        raise WorkbenchError(f"--norm must be {' or '.join(NORMS)}, not {norm!r}")
    big = [v for v in values if v > 1] if norm == "linf" else []
    if big:
        raise WorkbenchError(f"{what} {big[0]:g} is larger than the whole [0, 1] pixel range; L-inf eps is in pixel "
                             "units (e.g. 0.3 or 8/255=0.031)")
    return values


@dataclass(frozen=True)
class Param:
    """One constructor parameter an attack exposes to the command line and the TUI."""

    name: str
    type: type  # int | float | str | bool
    default: Any = None  # what the evaluation passes; None: not passed, the constructor decides ("auto")
    help: str = ""
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive lower bound of a number
    positive: bool = False  # a number strictly > 0
    many: bool = False  # a list of values (DeepFool's max_ratio sweep)
    option: str | None = None  # the shared `workbench attack` option that also sets it (SHARED_OPTIONS)

    def parse(self, text: str) -> Any:
        """Text (a list: comma-separated) -> the checked value; ValueError with a short reason otherwise."""
        if self.many:
            return self.check([self._one(part.strip()) for part in text.split(",")])
        return self.check(self._one(text.strip()))

    def _one(self, text: str) -> Any:
        if self.type is bool:
            if text.lower() in _TRUE + _FALSE:
                return text.lower() in _TRUE
            raise ValueError(f"{text!r} is not true or false")
        if self.type is int:
            try:
                return int(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a whole number") from None
        if self.type is float:
            try:
                return _number(text)
            except (ValueError, ZeroDivisionError):
                raise ValueError(f"{text!r} is not a number") from None
        if not text or any(c in text for c in ",:="):  # the --attack syntax could not carry it
            raise ValueError(f"{text!r} is not a valid value")
        return text

    def check(self, value: Any) -> Any:
        """The value if it has this parameter's type and bounds (ints pass as floats); else ValueError."""
        if self.many:
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError("takes one or more comma-separated values")
            return tuple(self._check_one(v) for v in value)
        return self._check_one(value)

    def _check_one(self, value: Any) -> Any:
        numeric = self.type in (int, float)
        accepted = (int,) if self.type is int else (int, float) if self.type is float else (self.type,)
        if not isinstance(value, accepted) or (isinstance(value, bool) and self.type is not bool):
            raise ValueError(f"{value!r} is not {'a whole number' if self.type is int else 'a ' + self.type.__name__}")
        if numeric:
            if not math.isfinite(value):
                raise ValueError(f"{value!r} is not a finite number")
            if self.positive and not value > 0:
                raise ValueError(f"must be > 0 (got {value:g})")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"must be >= {self.minimum:g} (got {value:g})")
            return float(value) if self.type is float else value
        if self.choices and value not in self.choices:
            raise ValueError(f"must be one of {', '.join(self.choices)} (got {value!r})")
        return value

    def show(self, value: Any = None) -> str:
        """A value as the command line writes it (the default when None; "auto" when there is none)."""
        value = self.default if value is None else value
        if value is None:
            return "auto"
        values = value if self.many else (value,)
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v).lower() if isinstance(v, bool) else str(v)
                        for v in values)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type.__name__, "default": self.default, "help": self.help,
                "choices": list(self.choices), "minimum": self.minimum, "positive": self.positive,
                "many": self.many, "option": self.option}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Param:
        default = data.get("default")
        return cls(str(data["name"]), _TYPES[data["type"]], tuple(default) if isinstance(default, list) else default,
                   str(data.get("help", "")), tuple(data.get("choices") or ()), data.get("minimum"),
                   bool(data.get("positive")), bool(data.get("many")), data.get("option"))


class _Field:
    """A label field: `{loss:upper}` -> "CE"; `{norm:suffix}` -> "" at its default, else "-l2"."""

    def __init__(self, value: Any, default: Any) -> None:
        self.value, self.default = value, default

    def __format__(self, spec: str) -> str:
        text = f"{self.value:g}" if isinstance(self.value, float) else str(self.value)
        if spec == "upper":
            return text.upper()
        if spec == "suffix":
            return "" if self.value == self.default else f"-{text}"
        return format(self.value, spec) if spec else text


@dataclass(frozen=True)
class AttackMeta:
    """Everything the CLI, the custom protocol and the TUI need to know about one registered attack."""

    name: str
    label: str  # a template (see `_Field`); `title` fills it with the defaults
    summary: str
    params: tuple[Param, ...] = ()
    norms: tuple[str, ...] = ("linf",)
    bounded: bool = True  # False: minimum-norm (C&W, DeepFool), reported at L2 thresholds
    targeted_capable: bool = True
    sweep_param: str | None = "eps"
    flag: str | None = None
    by_name: dict[str, Param] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {p.name: p for p in self.params})

    @property
    def title(self) -> str:
        return self.run_label({}, self.norms[0])

    @property
    def spelled(self) -> str:
        """How the command line names it: its flag, else --attack NAME."""
        return self.flag or f"--attack {self.name}"

    def run_label(self, values: dict[str, Any], norm: str) -> str:
        """The label of a run with these parameter values (missing ones at their defaults) and norm."""
        fields = {p.name: _Field(values.get(p.name, p.default), p.default) for p in self.params}
        fields["norm"] = _Field(norm, self.norms[0])
        return self.label.format(**fields)

    def parse_values(self, raw: dict[str, str], where: str) -> dict[str, Any]:
        """{key: text} -> {key: typed value}; an unknown key or a bad value is one line naming `where`."""
        values = {}
        for key, text in raw.items():
            param = self.by_name.get(key)
            if param is None:
                keys = ", ".join(self.by_name) or "none"
                raise WorkbenchError(f"{where}: {self.name} has no parameter {key!r}; its parameters: {keys}")
            try:
                values[key] = param.parse(text)
            except ValueError as exc:
                raise WorkbenchError(f"{where}: {key}: {exc}") from None
        return values

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "summary": self.summary,
                "params": [p.to_json() for p in self.params], "norms": list(self.norms), "bounded": self.bounded,
                "targeted_capable": self.targeted_capable, "sweep_param": self.sweep_param, "flag": self.flag}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttackMeta:
        return cls(str(data["name"]), str(data["label"]), str(data["summary"]),
                   tuple(Param.from_json(p) for p in data["params"]), tuple(data["norms"]), bool(data["bounded"]),
                   bool(data["targeted_capable"]), data["sweep_param"], data["flag"])


def describe(cls: type) -> AttackMeta:
    """The metadata an attack class declares, checked; ValueError names what is wrong.

    `flag`, `label`, `summary` and `params` are read from the class itself, not its bases: a subclass
    (APGD-CE of APGD, BIM of PGD) has other parameters and must not take its parent's flag.
    """
    own = vars(cls)
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"attack {cls.__name__}: name {name!r} must be lower-case letters, digits and _")
    doc = (own.get("__doc__") or "").strip()
    meta = AttackMeta(name=name, label=own.get("label") or name, summary=own.get("summary") or
                      (doc.splitlines()[0] if doc else ""), params=tuple(own.get("params", ())),
                      norms=tuple(cls.norms), bounded=bool(cls.bounded),
                      targeted_capable=bool(cls.targeted_capable), sweep_param=cls.sweep_param,
                      flag=own.get("flag"))
    where = f"attack {name}"
    if meta.flag is not None and not (isinstance(meta.flag, str) and _FLAG.match(meta.flag)):
        raise ValueError(f"{where}: flag {meta.flag!r} must look like --name")
    if not meta.norms or any(n not in NORMS for n in meta.norms):
        raise ValueError(f"{where}: norms {meta.norms!r} must be among {', '.join(NORMS)}")
    names = [p.name for p in meta.params]
    for p in meta.params:
        if not isinstance(p, Param) or p.type not in _TYPES.values():
            raise ValueError(f"{where}: params holds {p!r}, not a Param of int, float, str or bool")
        if p.name in RESERVED or names.count(p.name) > 1 or not _NAME.match(p.name):
            raise ValueError(f"{where}: parameter {p.name!r} is reserved, repeated or badly named")
        if p.option is not None and p.option not in SHARED_OPTIONS:
            raise ValueError(f"{where}: {p.name} follows option {p.option!r}, not one of {', '.join(SHARED_OPTIONS)}")
        if p.default is not None:
            p.check(p.default)
        if p.name == meta.sweep_param and not p.many:
            raise ValueError(f"{where}: {p.name} is swept, so it takes many values (many=True)")
    try:
        meta.title
    except (KeyError, ValueError, IndexError) as exc:
        raise ValueError(f"{where}: label {meta.label!r} does not format: {exc!r}") from None
    return meta


def split_choice(text: str) -> tuple[str, dict[str, str]]:
    """'pgd:steps=20,restarts=2' -> ("pgd", {"steps": "20", "restarts": "2"}).

    A part without "=" continues the value before it, so a list reads naturally:
    'deepfool:max_ratio=0.1,0.2,steps=20'. Raises a WorkbenchError on a malformed text.
    """
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise WorkbenchError(f"--attack {text!r}: give NAME or NAME:key=value,... (see `workbench attacks`)")
    raw: dict[str, str] = {}
    key = None
    for part in rest.split(",") if rest.strip() else []:
        if "=" in part:
            key, _, value = part.partition("=")
            key = key.strip()
            if not key or key in raw:
                raise WorkbenchError(f"--attack {text!r}: {'a key is missing' if not key else f'{key} is given twice'}")
            raw[key] = value
        elif key is None:
            raise WorkbenchError(f"--attack {text!r}: {part.strip()!r} is not key=value")
        else:
            raw[key] += "," + part
    return name, raw
