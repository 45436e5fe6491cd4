"""The `custom` protocol: the attacks picked on the command line, built from their declared metadata.

Each choice is `NAME[:key=value,...]` (`--attack`, or a shorthand flag such as `--pgd`). A parameter
takes, in order: its value in the choice, the shared option it follows (`Param.option`: `--steps 20`
changes PGD/BIM/MIM/APGD/multi-target iterations and leaves C&W alone unless asked, `--cw-steps`),
its declared default. Nothing here names an attack: see workbench/attack_meta.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from attacks import attack_meta

from ..attack_meta import AttackMeta, split_choice
from ..errors import WorkbenchError
from .protocol import AttackSpec, Protocol


@dataclass(frozen=True)
class AttackChoice:
    """One attack as chosen: its name and the values its `--attack` text set (typed)."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def meta(self) -> AttackMeta:
        return attack_meta(self.name)


def parse_choice(text: str) -> AttackChoice:
    """'pgd:steps=20' -> AttackChoice; an unknown attack, key or value is one line listing the valid ones."""
    name, raw = split_choice(text)
    meta = attack_meta(name)
    return AttackChoice(name, meta.parse_values(raw, f"--attack {text}"))


@dataclass
class AttackOptions:
    eps: list[float]
    norm: str = "linf"
    shared: dict[str, Any] = field(default_factory=dict)  # the shared options given, by SHARED_OPTIONS name


def check_norm(choice: AttackChoice, norm: str) -> None:
    """An eps-bounded attack must support the norm; a minimum-norm one runs in its own (reported at thresholds)."""
    meta = choice.meta
    if norm not in meta.norms and meta.bounded:
        raise WorkbenchError(f"{meta.spelled} supports --norm {' | '.join(meta.norms)} only; drop it or use "
                             f"--norm {meta.norms[0]}")


def build_spec(choice: AttackChoice, options: AttackOptions) -> AttackSpec:
    meta = choice.meta
    check_norm(choice, options.norm)
    values = {}
    for p in meta.params:
        if p.name in choice.values:
            value = choice.values[p.name]
        elif p.option in options.shared:
            try:
                value = p.check(options.shared[p.option])
            except ValueError as exc:
                raise WorkbenchError(f"--{p.option.replace('_', '-')}: {meta.title} {p.name}: {exc}") from None
        else:
            value = p.default
        if value is not None:  # None: the constructor's own default
            values[p.name] = list(value) if p.many else value
    in_norm = options.norm in meta.norms
    if len(meta.norms) > 1:
        values["norm"] = options.norm
    if meta.sweep_param == "eps":
        sweep = options.eps if meta.bounded else None
    else:
        sweep = values.pop(meta.sweep_param, None)
    thresholds = options.eps if not meta.bounded and in_norm else None
    label = meta.run_label(values, options.norm if in_norm else meta.norms[0])
    return AttackSpec(meta.name, values, sweep, label, thresholds=thresholds)


def custom_protocol(choices: list[AttackChoice], options: AttackOptions) -> Protocol:
    specs: list[AttackSpec] = []
    for choice in choices:
        spec = build_spec(choice, options)
        if any(s.attack == spec.attack and s.params == spec.params and s.sweep == spec.sweep for s in specs):
            continue  # asked twice (--pgd --attack pgd): run once
        if any(s.label == spec.label for s in specs):  # the same attack with other settings: say which
            given = ",".join(f"{k}={choice.meta.by_name[k].show(v)}" for k, v in choice.values.items())
            spec.label += f" {given or '[' + spec.attack + ']'}"
        specs.append(spec)
    return Protocol("custom", specs, "attacks chosen on the command line")
