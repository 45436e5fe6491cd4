"""A run's metrics stream as chart series, progress, ETA and best values (pure: no textual).

The trainer appends `step` and `epoch` records to metrics.jsonl; a resume rewrites the file
(JsonlTail.read() then says reset=True) and may repeat an epoch, so per-epoch series keep the
last record of each epoch and per-step series the last record of each step.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .format import pct

Series = tuple[list[float], list[float]]


@dataclass
class Best:
    value: float
    epoch: int  # 0: unknown (only status.json's value is left, the metrics stream is not)


@dataclass
class Progress:
    epoch: int  # epochs completed
    epochs: int
    batch: int  # batches done in the epoch in progress
    batches: int

    @property
    def epoch_fraction(self) -> float:
        return min(1.0, self.batch / self.batches) if self.batches else 0.0

    @property
    def overall_fraction(self) -> float:
        if not self.epochs:
            return 0.0
        return min(1.0, (self.epoch + self.epoch_fraction) / self.epochs)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class History:
    """Accumulates metrics records; `apply(records, reset)` takes what a JsonlTail read returned."""

    def __init__(self, records: Iterable[dict[str, Any]] = ()) -> None:
        self.epochs: dict[int, dict[str, Any]] = {}
        self.steps: dict[int, dict[str, Any]] = {}
        self.add(records)

    def clear(self) -> None:
        self.epochs.clear()
        self.steps.clear()

    def apply(self, records: Sequence[dict[str, Any]], reset: bool) -> None:
        if reset:
            self.clear()  # the file was rewritten: `records` is its whole new content
        self.add(records)

    def add(self, records: Iterable[dict[str, Any]]) -> None:
        for rec in records:
            kind = rec.get("kind")
            if kind == "epoch" and isinstance(rec.get("epoch"), int):
                self.epochs[rec["epoch"]] = rec
            elif kind == "step" and isinstance(rec.get("step"), int):
                self.steps[rec["step"]] = rec

    def __len__(self) -> int:
        return len(self.epochs) + len(self.steps)

    # -- series ----------------------------------------------------------------------------
    def epoch_series(self, key: str) -> Series:
        """(epochs, values) of an epoch-record field; epochs where it is null are left out."""
        xs, ys = [], []
        for epoch in sorted(self.epochs):
            value = _num(self.epochs[epoch].get(key))
            if value is not None:
                xs.append(float(epoch))
                ys.append(value)
        return xs, ys

    def step_series(self, key: str = "train_loss") -> Series:
        xs, ys = [], []
        for step in sorted(self.steps):
            value = _num(self.steps[step].get(key))
            if value is not None:
                xs.append(float(step))
                ys.append(value)
        return xs, ys

    # -- summaries -------------------------------------------------------------------------
    def best(self, key: str) -> Best | None:
        """The highest value of an epoch field and the first epoch that reached it."""
        xs, ys = self.epoch_series(key)
        if not ys:
            return None
        i = max(range(len(ys)), key=lambda j: (ys[j], -xs[j]))
        return Best(ys[i], int(xs[i]))

    def lowest(self, key: str) -> Best | None:
        """The lowest value of an epoch field (a loss) and the first epoch that reached it."""
        xs, ys = self.epoch_series(key)
        if not ys:
            return None
        i = min(range(len(ys)), key=lambda j: (ys[j], xs[j]))
        return Best(ys[i], int(xs[i]))

    def last_step(self) -> dict[str, Any] | None:
        return self.steps[max(self.steps)] if self.steps else None

    # -- timing ----------------------------------------------------------------------------
    def seconds_per_epoch(self, recent: int = 5) -> float | None:
        """Median wall time between the recent epoch records (evaluation included).

        The median ignores the one long gap a stop-and-resume leaves between two epochs.
        """
        times = [_num(self.epochs[e].get("time")) for e in sorted(self.epochs)]
        times = [t for t in times if t is not None][-(recent + 1):]
        gaps = [b - a for a, b in zip(times, times[1:]) if b > a]
        if gaps:
            return statistics.median(gaps)
        seconds = [_num(self.epochs[e].get("seconds")) for e in sorted(self.epochs)][-recent:]
        seconds = [s for s in seconds if s is not None and s > 0]
        return statistics.median(seconds) if seconds else None

    def seconds_per_step(self, recent: int = 10) -> float | None:
        """Median time per step between the recent step records."""
        pts = [(s, _num(self.steps[s].get("time"))) for s in sorted(self.steps)][-(recent + 1):]
        pts = [(s, t) for s, t in pts if t is not None]
        rates = [(t2 - t1) / (s2 - s1) for (s1, t1), (s2, t2) in zip(pts, pts[1:]) if s2 > s1 and t2 > t1]
        return statistics.median(rates) if rates else None


def progress(history: History, status: Any | None) -> Progress:
    """Epoch and batch position: status.json, moved on by step lines newer than its last heartbeat.

    The trainer writes status.json every couple of seconds but a step line at every log point,
    so the latest step record is often the more current position.
    """
    epoch = int(getattr(status, "epoch", 0) or 0)
    epochs = int(getattr(status, "epochs", 0) or 0)
    batch = int(getattr(status, "batch", 0) or 0)
    batches = int(getattr(status, "batches", 0) or 0)
    step = int(getattr(status, "step", 0) or 0)
    if history.epochs:
        newest = max(history.epochs)
        if newest > epoch:
            epoch, batch = newest, 0
    last = history.last_step()
    if last is not None and int(last.get("step", 0)) > step and isinstance(last.get("epoch"), int):
        if last["epoch"] == epoch + 1 and isinstance(last.get("batch"), int):
            batch = last["batch"]
    if batches and (batch >= batches or (epochs and epoch >= epochs)):
        batch = batches  # a finished run's last epoch is complete
    return Progress(epoch, epochs, batch, batches)


def eta_seconds(history: History, status: Any | None, state: str) -> float | None:
    """Time left for a running run; None when it is not running or there is nothing to go by."""
    if state not in ("running", "starting"):
        return None
    pos = progress(history, status)
    if not pos.epochs:
        return None
    left_epochs = max(0.0, pos.epochs - pos.epoch - pos.epoch_fraction)
    per_epoch = history.seconds_per_epoch()
    if per_epoch is None:
        per_step = history.seconds_per_step()
        if per_step is None or not pos.batches:
            return None
        per_epoch = per_step * pos.batches
    return left_epochs * per_epoch


# -- best values -------------------------------------------------------------------------------

def best_accuracy(history: History, status: Any | None, kind: str) -> Best | None:
    """The best `kind` ("clean" or "robust") test accuracy so far and its epoch.

    From the metrics stream; when that has none (not read yet, or gone), status.json's
    `best_<kind>` with the epoch unknown (0).
    """
    best = history.best(f"test_{kind}_acc")
    if best is None:
        value = _num(getattr(status, f"best_{kind}", None))
        if value is not None:
            return Best(value, 0)
    return best


def best_text(best: Best | None) -> str:
    """'97.8% (ep 10)', '97.8%' when the epoch is unknown, '-' when there is none."""
    if best is None:
        return "-"
    return pct(best.value) + (f" (ep {best.epoch})" if best.epoch else "")


# -- drawing many points -----------------------------------------------------------------------

def downsample(xs: Sequence[float], ys: Sequence[float], points: int) -> Series:
    """At most `points` points of a long series, for a chart that cannot show more.

    The first and the last point, and between them the lowest and the highest point of each of
    (points - 2) / 2 runs of consecutive points, in order: a spike in a long loss curve survives,
    which picking every n-th point would lose. A series that fits is returned whole.
    """
    n = min(len(xs), len(ys))
    points = max(points, 4)
    if n <= points:
        return list(xs[:n]), list(ys[:n])
    buckets = (points - 2) // 2
    inner = n - 2
    keep = [0]
    for b in range(buckets):
        lo, hi = 1 + b * inner // buckets, 1 + (b + 1) * inner // buckets
        if lo >= hi:
            continue
        part = list(ys[lo:hi])
        # min/max/index run in C: a 50k-point series takes milliseconds.
        i_low, i_high = lo + part.index(min(part)), lo + part.index(max(part))
        keep.extend((i_low, i_high) if i_low <= i_high else (i_high, i_low))
        if i_low == i_high:
            keep.pop()
    keep.append(n - 1)
    return [xs[i] for i in keep], [ys[i] for i in keep]
