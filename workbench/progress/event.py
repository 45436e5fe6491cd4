"""What an evaluation in progress reports: one plain event, torch-free, so the UI process can read it.

The engine (workbench/evaluation/engine.py) emits an `EvalProgress` when a spec starts, on every
step of the attack working on a chunk, when a chunk, a pass (one sweep value) and the spec end.
Everything in it is a host-side count; reading it never waits for the device.

Counts of a pass are (value, sample) pairs: one pair per sample in a carry sweep (one pass per
eps), several per sample in a joint pass (every eps at once, `value_index` None).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable

KINDS = ("spec_start", "step", "chunk_end", "pass_end", "spec_end")


@dataclass(frozen=True)
class EvalProgress:
    kind: str  # one of KINDS
    label: str  # the spec's label ("PGD", "AutoAttack")
    protocol: str = ""
    spec_index: int = 0  # position of the spec in the run (0-based)
    specs: int = 0  # specs in the run (0: unknown)
    sweep_param: str | None = None  # "eps", DeepFool's "max_ratio", None for one unbounded run
    value: float | None = None  # the sweep value of this pass (None: unbounded, or a joint pass)
    value_index: int | None = None  # its position in the sweep (None: a joint pass over several values)
    values: int = 1  # sweep values of the spec
    chunk: int = 0  # chunk of this pass being attacked (0-based)
    chunks: int = 0  # chunks of this pass
    rows: int = 0  # pairs in that chunk
    done: int = 0  # pairs of the spec finished (attacked, or fooled at a smaller eps); a step's chunk is not
    total: int = 0  # pairs the spec has to attack
    stage: str = ""  # the attack taking steps: "pgd", or AutoAttack's "apgd_t"
    stage_index: int = 0
    stages: int = 1
    step: int = 0  # steps the stage has taken on this chunk
    steps: int = 0  # its budget of steps on this chunk
    robust: int = 0  # pairs of this pass not fooled yet (pairs still to attack count as robust)
    attacked: int = 0  # pairs this pass attacks: `robust`'s denominator

    @property
    def fraction(self) -> float:
        """Estimated share of the spec's work done: pairs done, plus the running chunk's share of its steps.

        An estimate: a chunk's AutoAttack stages count alike, though later ones run on fewer rows."""
        if self.total <= 0 or self.kind == "spec_end":
            return 1.0
        within = 0.0  # of the running chunk (a step); other kinds come between chunks and `done` counts them
        if self.kind == "step" and self.steps > 0:
            within = (self.stage_index + min(self.step / self.steps, 1.0)) / max(self.stages, 1)
        return min(1.0, (self.done + self.rows * within) / self.total)

    @property
    def run_fraction(self) -> float | None:
        """Share of the run done, counting every spec alike (None when the run's size is unknown)."""
        if self.specs <= 0:
            return None
        return min(1.0, (self.spec_index + self.fraction) / self.specs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "EvalProgress | None":
        """An event another process wrote (a job file); a field of the wrong type reads as its default."""
        if not isinstance(data, dict) or not isinstance(data.get("label"), str) or data.get("kind") not in KINDS:
            return None
        kept: dict[str, Any] = {}
        for f in fields(cls):
            value = data.get(f.name)
            if f.name in ("sweep_param", "value", "value_index"):
                ok = value is None or (_is_number(value) if f.name == "value" else
                                       isinstance(value, str) if f.name == "sweep_param" else _is_count(value))
            else:
                ok = isinstance(value, str) if f.type == "str" else _is_count(value)
            if ok:
                kept[f.name] = value
        return cls(**kept)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63


ProgressHook = Callable[[EvalProgress], None]


def eta_seconds(elapsed: float, fraction: float | None) -> float | None:
    """Remaining seconds if the rest goes at the pace so far: an estimate (None before any progress)."""
    if fraction is None or fraction <= 0.0 or elapsed <= 0.0:
        return None
    return max(0.0, elapsed * (1.0 - fraction) / fraction)


def duration(seconds: float | None) -> str:
    """0.4s, 12s, 4m05s, 3h12m."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s}s" if s < 60 else f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def where(event: EvalProgress) -> str:
    """'[2/5] AutoAttack eps 0.1 (1/3)': the spec, its position in the run and the sweep value."""
    head = f"[{event.spec_index + 1}/{event.specs}] " if event.specs else ""
    text = head + event.label
    name = "eps" if event.sweep_param in (None, "eps") else ("d" if event.sweep_param == "max_ratio"
                                                               else event.sweep_param)
    named = event.label.split()[-1:] == [name]  # "DeepFool d" names its sweep already: not "DeepFool d d 0.1"
    if event.value is not None:
        text += f"{'' if named else ' ' + name} {event.value:g}"
        if event.values > 1 and event.value_index is not None:
            text += f" ({event.value_index + 1}/{event.values})"
    elif event.values > 1:  # the whole sweep: at its start, or one joint pass over every value
        text += f" ({event.values} {name})" if event.kind == "spec_start" else f" all {event.values} {name}"
    return text


def describe(event: EvalProgress, elapsed: float | None = None, eta: float | None = None) -> str:
    """The one-line status the CLI and the TUI show: spec, eps, stage, step, chunk, robust, time."""
    bits = [where(event)]
    if event.kind == "step" and event.stage:
        stage = event.stage + (f" {event.stage_index + 1}/{event.stages}" if event.stages > 1 else "")
        if event.steps:
            stage += f" step {event.step}/{event.steps}"
        bits.append(stage)
    if event.chunks > 1 and event.kind in ("step", "chunk_end"):
        bits.append(f"chunk {event.chunk + 1}/{event.chunks}")
    if event.kind != "spec_start":
        bits.append(f"robust {event.robust}/{event.attacked}")
    if elapsed is not None:
        bits.append(duration(elapsed))
    if eta is not None:
        bits.append(f"eta {duration(eta)}")
    return " · ".join(bits)
