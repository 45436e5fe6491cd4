"""When the run, the spec and the pass of a progress event began, and the ETA that follows (no torch).

Time comes from an injectable monotonic clock. The ETA is an estimate: the spec's elapsed time
scaled by the share of its work left (`EvalProgress.fraction`). It covers the spec in progress
(every sweep value of it), the one thing whose size is known: the pace of one attack says little
about the next. AutoAttack's later stages run on fewer rows, so its estimate starts high and falls.
"""

from __future__ import annotations

import time
from typing import Callable

from .event import EvalProgress, eta_seconds


class ProgressClock:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.run_start: float | None = None
        self.spec_start = self.pass_start = 0.0
        self._spec: tuple | None = None
        self._pass: tuple | None = None

    def observe(self, event: EvalProgress) -> float:
        """Note where `event` belongs; returns the clock's reading."""
        now = self.clock()
        if self.run_start is None:
            self.run_start = now
        spec = (event.spec_index, event.protocol, event.label)
        if event.kind == "spec_start" or spec != self._spec:
            self._spec, self.spec_start, self._pass = spec, now, None
        key = (spec, event.value_index, event.value)
        if event.kind != "spec_start" and key != self._pass:
            self._pass, self.pass_start = key, now
        return now

    def elapsed(self, now: float) -> float:
        return 0.0 if self.run_start is None else now - self.run_start

    def eta(self, event: EvalProgress, now: float) -> float | None:
        """Seconds left in the spec of `event` (an estimate; None until some of it is done)."""
        return eta_seconds(now - self.spec_start, event.fraction)
