"""A past evaluation's settings -> the attack panel's form, for a rerun from the History tab.

Two sources, the exact one first: the argument list the panel launched the evaluation with (its job
file keeps it, also once the job's report stands for it in the history), else what a saved report
records (an evaluation run from the CLI). A report records each attack's resolved settings, not the
command line, so a few choices cannot be told apart there; `missing` names them, and everything the
form cannot hold (a seed, a transfer source, ...), one short phrase each. Pure (no textual, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ...attack_meta import AttackMeta, Param
from ...runs.evals import as_number, report_entries
from .attack_form import DEFAULT_EXAMPLES, AttackForm, fit_to_catalog, form_from_args

CUSTOM = "custom"  # the protocol of the attacks chosen one by one (workbench.evaluation.custom)
PAPER = "paper:"  # a preset's protocol is "paper:<preset>"; the strong preset's is "strong"
# Report fields the form has no control for -> the value the panel always runs with.
NOT_IN_FORM: dict[str, Any] = {"seed": 0, "targeted": False, "transfer_from": None, "amp": "off",
                               "channels_last": False, "compile": False}


@dataclass
class PastSettings:
    form: AttackForm
    checkpoint: Path | None  # None: not found, the form keeps its own
    missing: list[str] = field(default_factory=list)  # what the form could not be given, one phrase each

    @property
    def complete(self) -> bool:
        """Everything that ran is in the form: a rerun runs the same evaluation."""
        return self.checkpoint is not None and not self.missing


def from_args(args: list[str], recorded_checkpoint: str, evals_dir: Path | None,
              catalog: Sequence[AttackMeta], presets: Sequence[str]) -> PastSettings:
    """From the argument list a job file records."""
    form, missing = form_from_args(args, catalog)
    return _finish(form, missing, recorded_checkpoint, evals_dir, catalog, presets)


def from_report(report: dict[str, Any], evals_dir: Path | None, catalog: Sequence[AttackMeta],
                presets: Sequence[str]) -> PastSettings:
    """From a saved report (tolerating an older or partial one: what it lacks is named in `missing`)."""
    names = [str(p.get("name")) for p in report_entries(report, "protocols")] or \
        list(dict.fromkeys(str(r.get("protocol")) for r in report_entries(report, "results")))
    papers = [n.removeprefix(PAPER) for n in names if n.startswith(PAPER)]
    form = AttackForm(preset=papers[0] if papers else "", adaptive="adaptive" in names, eps="")
    missing = [f"preset {p}" for p in papers[1:]]
    if "strong" in names and not papers and CUSTOM not in names:
        form.preset = "strong"  # `--preset strong` runs only that protocol
    else:
        form.strong = "strong" in names
    for name, values, exact in _custom_attacks(report):
        if name in form.attacks:
            missing.append(f"a second {name}")
            continue
        form.attacks.append(name)
        meta = next((m for m in catalog if m.name == name), None)
        if meta is not None:
            form.params[name], lost = _param_texts(meta, values, exact)
            missing += lost
    form.eps = ",".join(repr(e) for e in _custom_eps(report))
    missing += _run_options(form, report)
    recorded = report.get("checkpoint")
    return _finish(form, missing, recorded if isinstance(recorded, str) else "", evals_dir, catalog, presets)


def _finish(form: AttackForm, missing: list[str], recorded: str, evals_dir: Path | None,
            catalog: Sequence[AttackMeta], presets: Sequence[str]) -> PastSettings:
    missing = missing + fit_to_catalog(form, catalog, presets)
    checkpoint = rerun_checkpoint(recorded, evals_dir)
    if checkpoint is None:
        missing.append(f"checkpoint {Path(recorded).name or '(not recorded)'} (not found)")
    return PastSettings(form, checkpoint, missing)


def rerun_checkpoint(recorded: str, evals_dir: Path | None) -> Path | None:
    """The checkpoint an evaluation ran on, found again: beside its evals/ folder first (a recorded path may
    be relative to another working directory), else as recorded; None when neither is a file."""
    if not recorded:
        return None
    name = Path(recorded).name
    beside = [evals_dir.parent / "checkpoints" / name, evals_dir.parent / name] if evals_dir is not None else []
    return next((p for p in (*beside, Path(recorded)) if p.is_file()), None)


# -- reading a report ----------------------------------------------------------------------------

def _custom_attacks(report: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
    """(attack, its values, exact) per attack of the custom protocol, in report order. Exact: the report's
    `specs` record what each attack was given; else the results' `settings` hold every value used, so an
    "auto" parameter's computed value cannot be told from a chosen one."""
    specs = [s for s in report_entries(report, "specs") if s.get("protocol") == CUSTOM]
    if specs:
        out = []
        for s in specs:
            values = dict(s.get("params") or {}) if isinstance(s.get("params"), dict) else {}
            if isinstance(s.get("sweep_param"), str) and s["sweep_param"] != "eps":
                values[s["sweep_param"]] = s.get("sweep")
            out.append((str(s.get("attack")), values, True))
        return out
    seen: dict[tuple[str, str], tuple[str, dict[str, Any], bool]] = {}
    for r in report_entries(report, "results"):
        settings = r.get("settings") if isinstance(r.get("settings"), dict) else {}
        name = str(r.get("attack") or settings.get("attack") or "?")
        if r.get("protocol") == CUSTOM:
            seen.setdefault((name, str(r.get("label"))), (name, settings, False))
    return list(seen.values())


def _param_texts(meta: AttackMeta, values: dict[str, Any], exact: bool) -> tuple[dict[str, str], list[str]]:
    """The form's text per parameter that differs from its default, and the parameters it could not hold."""
    texts, lost = {}, []
    for p in meta.params:
        value = values.get(p.name)
        if value is None:
            continue
        if p.default is None and not exact:
            lost.append(f"{meta.title} {p.name} (left auto)")
            continue
        try:
            value = p.check(value)
        except ValueError:
            lost.append(f"{meta.title} {p.name}={value!r}")
            continue
        if p.default is None or value != p.check(p.default):
            texts[p.name] = _text(p, value)
    return texts, lost


def _text(p: Param, value: Any) -> str:
    """A value as the form's field holds it; floats in full (repr), so the rerun uses the very same number."""
    one = (lambda v: str(v).lower() if isinstance(v, bool) else repr(v) if isinstance(v, float) else str(v))
    return ",".join(one(v) for v in value) if p.many else one(value)


def _custom_eps(report: dict[str, Any]) -> list[float]:
    """The eps the chosen attacks ran at ([] when none was chosen: blank, the preset's or the dataset's).
    With a preset, a given --eps cannot be told from the preset's own: the blank field keeps the preset's."""
    rows = [w for w in report_entries(report, "worst_case") if w.get("protocol") == CUSTOM] or \
        [r for r in report_entries(report, "results") if r.get("protocol") == CUSTOM]
    return sorted({e for e in (as_number(r.get("eps")) for r in rows) if e is not None})


def _run_options(form: AttackForm, report: dict[str, Any]) -> list[str]:
    """norm, n, head, device, save examples from the report; what the form cannot hold, as phrases."""
    missing = []
    norms = [w.get("norm") for w in report_entries(report, "worst_case")]
    form.norm = next((n for n in norms if isinstance(n, str)), form.norm)
    n = as_number(report.get("n"))
    form.n = str(int(n)) if n is not None else ""
    if n is None:
        missing.append("n")
    head = report.get("head")
    form.head = head if isinstance(head, str) else form.head
    device = report.get("device")
    if isinstance(device, str):
        form.device = "cuda" if device.startswith("cuda") else device  # "cuda:0" ran on the one GPU named
    examples = as_number(report.get("save_examples"))
    if examples is not None:
        form.save_examples = str(int(examples))
    elif report.get("examples"):
        form.save_examples = DEFAULT_EXAMPLES
        missing.append("how many examples were saved")
    else:
        form.save_examples = "0"
    for key, panel_value in NOT_IN_FORM.items():
        value = report.get(key, panel_value)
        if value != panel_value and not (value is None and panel_value is False):
            missing.append(key if value is True else f"{key} {value}")
    return missing
