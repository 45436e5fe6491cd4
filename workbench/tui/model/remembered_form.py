"""The attack panel's last launched settings, remembered in the runs folder for the next time it opens.

One file for the runs folder rather than one per run: comparing checkpoints means evaluating each the
same way, so the next checkpoint opened starts from the protocol the last one ran. The checkpoint is
not remembered (the panel opens on the one it was asked for). `<runs>/.workbench/attack_form.json`,
written atomically; it may come from another process or version, so anything but this format and
version reads as nothing remembered, and a field of the wrong type as its default. Pure but for the
file itself (no textual, no torch).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Sequence

from ...attack_meta import AttackMeta
from ...runs import read_json, write_json_atomic
from .attack_form import AttackForm, fit_to_catalog

FILE = Path(".workbench") / "attack_form.json"
FORMAT, VERSION = "workbench-attack-form", 1
_DEFAULTS = AttackForm()
# The form's plain fields by type: a field added to AttackForm is remembered without a change here.
_PLAIN = {f.name: type(getattr(_DEFAULTS, f.name)) for f in fields(AttackForm) if f.name not in ("attacks", "params")}


def memory_path(runs_dir: Path) -> Path:
    return Path(runs_dir) / FILE


def to_json(form: AttackForm) -> dict[str, Any]:
    """The form as the file holds it: blank parameter fields left out (blank means the default)."""
    params = {name: kept for name, raw in form.params.items() if (kept := {k: v for k, v in raw.items() if v.strip()})}
    plain = {name: getattr(form, name) for name in _PLAIN}
    return {"format": FORMAT, "version": VERSION, "form": {"attacks": list(form.attacks), "params": params, **plain}}


def from_json(data: Any, catalog: Sequence[AttackMeta], presets: Sequence[str]) -> tuple[AttackForm | None, list[str]]:
    """The remembered form fitted to the catalog, and what was dropped from it (phrases); (None, []) when
    `data` is not this format and version."""
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION:
        return None, []
    raw = data.get("form") if isinstance(data.get("form"), dict) else {}
    form = AttackForm()
    for name, kind in _PLAIN.items():
        if type(raw.get(name)) is kind:  # `type is`: a bool is no str, and 1 is no bool
            setattr(form, name, raw[name])
    attacks = raw.get("attacks")
    if isinstance(attacks, list):
        form.attacks = list(dict.fromkeys(a for a in attacks if isinstance(a, str)))
    params = raw.get("params")
    if isinstance(params, dict):
        form.params = {name: {k: v for k, v in values.items() if isinstance(k, str) and isinstance(v, str)}
                       for name, values in params.items() if isinstance(values, dict)}
    return form, fit_to_catalog(form, catalog, presets)


def load(runs_dir: Path) -> dict[str, Any] | None:
    """The file's content; None when it is missing or unreadable (never raises)."""
    return read_json(memory_path(runs_dir))


def save(runs_dir: Path, form: AttackForm) -> None:
    """Write atomically; WorkbenchError (one line) when the folder cannot be written."""
    write_json_atomic(memory_path(runs_dir), to_json(form))
