"""The Run monitor's lines of text: the status line fitted to a width, the evaluation cadence, the resume hint.

Pure (no textual): the screen passes what it read from the run's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.text import Text

from .format import duration, state_markup
from .history import History, Progress, best_accuracy, best_text

SEP = " · "


@dataclass
class Part:
    name: str  # what the hint calls it when it is left out
    full: str  # markup
    short: str = ""  # markup; "" = as full


def _cells(markup: str) -> int:
    return Text.from_markup(markup).cell_len


def fit(parts: list[Part], width: int, shorten: list[str], drop: list[str]) -> str:
    """Join the parts in at most `width` cells: first with short forms (in `shorten` order), then
    leaving out parts (in `drop` order) and ending with a hint naming what is left out ("…device,batch")."""
    forms = {p.name: p.full for p in parts}
    kept = [p.name for p in parts]

    def line(hidden: list[str]) -> str:
        text = SEP.join(forms[n] for n in kept if n not in hidden)
        return text + (f"{SEP}…{','.join(hidden)}" if hidden else "")  # "…device": the device is left out

    if _cells(line([])) <= width:
        return line([])
    by_name = {p.name: p for p in parts}
    for name in shorten:
        if name in by_name and by_name[name].short:
            forms[name] = by_name[name].short
            if _cells(line([])) <= width:
                return line([])
    hidden: list[str] = []
    for name in drop:
        if name in by_name:
            hidden.append(name)
            if _cells(line(hidden)) <= width:
                return line(hidden)
    return line(hidden)


def status_line(state: str, status: Any | None, pos: Progress, history: History, eta: float | None,
                width: int = 10_000) -> str:
    """Where the run stands, on one line of at most `width` cells (markup).

    Epochs count completed ones, as the runs table does; the batch is within the epoch in progress.
    At 80 columns the parts take short forms ("ep 4/15", "clean 97.8%"); what still does not fit is
    left out, least important first, and the line says so ("…device"); the screen's tooltip has it all.
    """
    running = state in ("running", "starting")
    clean, robust = best_accuracy(history, status, "clean"), best_accuracy(history, status, "robust")
    device = escape(status.device) if status is not None and getattr(status, "device", "") else "?"
    parts = [Part("state", state_markup(escape(state))),
             Part("epochs", f"{pos.epoch}/{pos.epochs or '?'} epochs done", f"ep {pos.epoch}/{pos.epochs or '?'}")]
    if running and pos.batches:
        parts.append(Part("batch", f"batch {pos.batch}/{pos.batches} of the next", f"batch {pos.batch}/{pos.batches}"))
    if running:
        parts.append(Part("ETA", f"ETA {duration(eta)}"))
    parts.append(Part("clean", f"best clean {best_text(clean)}", f"clean {best_text(clean).split(' (')[0]}"))
    parts.append(Part("robust", f"robust {best_text(robust)}", f"robust {best_text(robust).split(' (')[0]}"))
    parts.append(Part("device", f"device {device}", device.split(" (")[0]))  # "cuda:0 (NVIDIA H100 ...)"
    return fit(parts, width, shorten=["batch", "device", "epochs", "robust", "clean"],
               drop=["device", "batch", "robust", "clean", "ETA", "epochs"])


def _eps(value: Any) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    k = value * 255
    fraction = f" ({round(k)}/255)" if abs(k - round(k)) < 1e-6 and round(k) and value < 1 and k != int(value) else ""
    return f"{value:g}{fraction}"


def _every(n: int) -> str:
    return "every epoch" if n == 1 else f"every {n} epochs"


def cadence_text(cfg: dict) -> str:
    """How often the trainer measures clean and robust accuracy, from config.yaml's `eval` block:
    'robust every 5 epochs + the last (PGD-20 eps 0.3 on 1000) · clean every epoch'. '' without one."""
    ev = cfg.get("eval") if isinstance(cfg, dict) else None
    if not isinstance(ev, dict):
        return ""
    robust_every, clean_every = ev.get("robust_every", 1), ev.get("clean_every", 1)
    if not isinstance(robust_every, int) or not isinstance(clean_every, int):
        return ""
    if robust_every:
        attack = str(ev.get("attack", "pgd")).upper()
        if attack == "PGD":
            attack += f"-{ev.get('steps', '?')}"
            if isinstance(ev.get("restarts"), int) and ev["restarts"] > 1:
                attack += f"×{ev['restarts']}"
        end = "" if robust_every == 1 else " + the last"
        robust = (f"robust {_every(robust_every)}{end} ({attack} eps {_eps(ev.get('eps', '?'))} "
                  f"on {ev.get('robust_subset', '?')})")
    else:
        robust = "robust accuracy not measured in training (eval.robust_every: 0)"
    clean = f"clean {_every(clean_every)}" if clean_every else "clean not measured"
    subset = ev.get("clean_subset")
    if clean_every and isinstance(subset, int):
        clean += f" (on {subset})"
    return f"{robust}{SEP}{clean}"


def resume_hint(state: str, last_checkpoint: Path, root: Path) -> str:
    """For a stopped run: where the resume state is and how to resume ('' for any other state)."""
    if state != "stopped":
        return ""
    if not last_checkpoint.is_file():
        return f"stopped before its first checkpoint: no {last_checkpoint.name} to resume from"
    return f"resume state: {last_checkpoint.relative_to(root)} · r resumes · workbench train --resume {root}"


def stop_notice(name: str, state: str, message: str, last_checkpoint: Path, root: Path) -> str:
    """The notice once a stopped trainer has exited: its own message, then where to resume from."""
    head = f"{name}: {message or state}"
    if state != "stopped":
        return head
    return f"{head}\n{resume_hint(state, last_checkpoint, root)}"
