"""Evaluation progress on stderr: a live line on a terminal, one plain line per stage elsewhere.

- `PlainLines` (stderr is not a terminal: logs, CI, the TUI's job log): a line when a spec starts,
  when each AutoAttack stage of a chunk ends and when each pass (sweep value) ends, with the robust
  count and seconds. Never a line per step: a run prints a few lines per attack and eps.
- `LiveLine` (a terminal): one line with a bar, redrawn from the latest event at most every
  `min_interval` seconds however fast events come, and at least every `min_interval` too while they
  stall (a ticker thread), so elapsed time and ETA keep moving during a long step. The plain lines
  are printed above it, so a finished stage stays on screen.

The ETA is an estimate of the spec in progress (see `timing`).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable, TextIO

from .event import EvalProgress, ProgressHook, describe, duration, where
from .timing import ProgressClock


class PlainLines:
    def __init__(self, write: Callable[[str], None] | None = None, clock: Callable[[], float] = time.monotonic):
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.timer = ProgressClock(clock)
        self._stage: tuple[tuple, EvalProgress, float] | None = None  # (key, its last event, its start)

    def __call__(self, event: EvalProgress) -> None:
        now = self.timer.observe(event)
        if event.kind == "spec_start":
            pairs = "samples" if event.values <= 1 else "(sample, value) pairs"
            self.write(f"{where(event)}: start · {event.total} {pairs} to attack")
        elif event.kind == "step" and event.stages > 1:
            key = (event.spec_index, event.value_index, event.chunk, event.stage_index)
            if self._stage is not None and self._stage[0] != key:
                same_chunk = self._stage[0][:3] == key[:3]
                self._end_stage(now, event.robust if same_chunk else None)
            if self._stage is None:
                self._stage = (key, event, now)
            else:
                self._stage = (key, event, self._stage[2])
        elif event.kind == "chunk_end":
            self._end_stage(now, event.robust)
        elif event.kind == "pass_end":
            self._end_stage(now, None)
            eta = self.timer.eta(event, now)
            line = f"{where(event)} done · robust {event.robust}/{event.attacked}"
            line += f" · {duration(now - self.timer.pass_start)}" + (f" · eta {duration(eta)}" if eta else "")
            self.write(line)

    def close(self) -> None:
        """Nothing to stop: every line is already written."""

    def _end_stage(self, now: float, robust: int | None) -> None:
        """One line for the ensemble stage that just ended (robust: the count right after it, if known)."""
        if self._stage is None:
            return
        _, ev, start = self._stage
        self._stage = None
        chunk = f" · chunk {ev.chunk + 1}/{ev.chunks}" if ev.chunks > 1 else ""
        count = ev.robust if robust is None else robust
        self.write(f"{where(ev)} · {ev.stage} {ev.stage_index + 1}/{ev.stages} done{chunk} · "
                   f"robust {count}/{ev.attacked} · {duration(now - start)}")


class RichScreen:
    """The terminal side of `LiveLine`: a transient Rich Live region on stderr."""

    def __init__(self, stream: TextIO | None = None):
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream or sys.stderr)
        # stdout stays untouched (--json prints the report there); other stderr writes go above the line.
        self.live = Live(console=self.console, auto_refresh=False, transient=True, redirect_stdout=False,
                         redirect_stderr=True)
        self.live.start()

    def update(self, text: str, fraction: float, times: str = "") -> None:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        # Bar and times first: on a narrow terminal the end of the description is what gets cut.
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=12)
        grid.add_column(no_wrap=True)
        grid.add_column(no_wrap=True, overflow="ellipsis")
        bar = ProgressBar(total=1.0, completed=fraction, width=12)
        grid.add_row(bar, Text(times, style="cyan"), Text(text, no_wrap=True, overflow="ellipsis"))
        self.live.update(grid, refresh=True)

    def print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False)

    def close(self) -> None:
        self.live.stop()


class LiveLine:
    def __init__(self, screen: Any | None = None, clock: Callable[[], float] = time.monotonic,
                 min_interval: float = 0.25, ticker: bool = True):
        self.screen = screen if screen is not None else RichScreen()
        self.clock = clock
        self.min_interval = min_interval
        self.timer = ProgressClock(clock)
        self.lines = PlainLines(write=self.screen.print, clock=clock)
        self._latest: EvalProgress | None = None
        self._last_draw = float("-inf")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick_loop, daemon=True, name="progress") if ticker else None
        if self._thread is not None:
            self._thread.start()

    def __call__(self, event: EvalProgress) -> None:
        with self._lock:
            self._latest = event
            self.timer.observe(event)
            self.lines(event)
            self._draw_if_due()

    def tick(self) -> None:
        """Redraw if due: elapsed time and ETA move even while no event comes."""
        with self._lock:
            self._draw_if_due()

    def _tick_loop(self) -> None:
        while not self._stop.wait(self.min_interval):
            self.tick()

    def _draw_if_due(self) -> None:
        now = self.clock()
        if self._latest is None or now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        ev = self._latest
        eta = self.timer.eta(ev, now)
        times = duration(self.timer.elapsed(now)) + (f" eta {duration(eta)}" if eta is not None else "")
        self.screen.update(describe(ev), ev.fraction, times)

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.screen.close()


def open_display(quiet: bool = False, stream: TextIO | None = None) -> "PlainLines | LiveLine | None":
    """The renderer for this stream (stderr): a live line on a terminal, plain lines elsewhere, none if quiet.
    Close it when the evaluation ends."""
    if quiet:
        return None
    stream = stream or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return LiveLine(RichScreen(stream))
    return PlainLines(lambda line: print(line, file=stream, flush=True))


class Hooks:
    """Several progress hooks as one (the terminal renderer, the TUI's job file). Falsy when empty, so a
    caller can pass `hooks or None` and the engine builds no events nobody reads."""

    def __init__(self, *hooks: ProgressHook | None):
        self.hooks = [h for h in hooks if h is not None]

    def __call__(self, event: EvalProgress) -> None:
        for hook in self.hooks:
            hook(event)

    def __bool__(self) -> bool:
        return bool(self.hooks)

    def close(self) -> None:
        """End the renderers among them (a live line leaves the terminal as it was); safe to call twice."""
        for hook in self.hooks:
            if isinstance(hook, (PlainLines, LiveLine)):
                hook.close()
