"""Run monitor: live charts, progress and ETA, the config and the log of one run; stop and resume.

`m` maximises the focused chart (tab moves the focus between charts); `m` or escape restores it.

A thread worker tails the run's files (metrics.jsonl, status.json, train.log) and posts what
changed; the screen only draws. It holds no pipe to the trainer: closing the screen or the app
leaves training running, and opening it again re-attaches from the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from textual import work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Label, ProgressBar, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from ...errors import WorkbenchError
from ...runs import RunPaths, Status, effective_state, pid_alive, resume_detached
from ...runs.control import request_stop
from ...runs.layout import read_config
from ...runs.tail import JsonlTail, tail_lines
from ..model.files import file_signature
from ..model.history import History, eta_seconds, progress
from ..model.monitor_text import cadence_text, resume_hint, status_line, stop_notice
from ..widgets.line_chart import toggle_maximized_chart
from ..model.run_text import config_text
from ..widgets.run_charts import RunCharts
from ..widgets.run_text_views import ConfigView, WrappedLog

LOG_LINES = 200
STOP_POLL_SECONDS = 0.2
# After this long, say why the trainer has not exited yet (and keep waiting).
STOP_PATIENCE_SECONDS = 120.0


@dataclass
class RunUpdate(Message):
    """What the tail found since the last look (None: unchanged)."""

    records: list[dict[str, Any]]
    reset: bool
    status: Status | None
    state: str
    log: list[str] | None = None
    config: str | None = None
    problem: str = ""  # why the run's status or config cannot be used ("" when they can)
    cadence: str | None = None  # how often accuracy is measured (from config.yaml; with the first update)


def _problem(run: RunPaths, status_problem: str) -> str:
    """Why the listing calls the run unreadable; a folder that is no run at all says so on its own."""
    config_problem = read_config(run.config)[1] if run.is_run() else ""
    return "; ".join(p for p in (config_problem, status_problem) if p)


def _reason(exc: BaseException) -> str:
    """One line saying why: a WorkbenchError or OSError speaks for itself, anything else names its type."""
    if isinstance(exc, (WorkbenchError, OSError)):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


class MonitorScreen(Screen):
    BINDINGS = [
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("a", "attack", "Attack"),
        Binding("m", "maximize_chart", "Max chart"),
        Binding("1", "tab('charts')", "Charts tab", show=False),
        Binding("2", "tab('config')", "Config tab", show=False),
        Binding("3", "tab('log')", "Log tab", show=False),
        Binding("escape", "back", "Back"),
    ]

    DEFAULT_CSS = """
    MonitorScreen #monitor-error { color: $error; text-style: bold; padding: 0 1; height: auto; display: none; }
    MonitorScreen #monitor-status { padding: 0 1; height: 1; }
    MonitorScreen #monitor-hint { color: $warning; padding: 0 1; height: 1; display: none; }
    MonitorScreen #monitor-progress { height: 1; padding: 0 1; }
    MonitorScreen #monitor-progress Label { width: auto; padding: 0 1 0 0; }
    MonitorScreen #monitor-progress ProgressBar { width: 1fr; padding: 0 1 0 0; }
    MonitorScreen #monitor-progress ProgressBar Bar { width: 1fr; }
    MonitorScreen TabbedContent { height: 1fr; }
    MonitorScreen TabPane { padding: 0; height: 1fr; }
    MonitorScreen #monitor-log { height: 1fr; }
    """

    def __init__(self, run_path: Path) -> None:
        super().__init__()
        self.run = RunPaths(Path(run_path))
        self.history = History()
        self.status: Status | None = None
        self.state = "unknown"
        self.problem = ""
        self.log_lines: list[str] = []
        self.sub_title = self.run.root.name

    def compose(self) -> ComposeResult:
        # A failed run opens on its log: that is where the reason is.
        first = Status.read(self.run.status)
        failed = first is not None and effective_state(first) == "failed"
        yield Header()
        yield Static("", id="monitor-error", markup=False)
        yield Static("loading…", id="monitor-status")
        yield Static("", id="monitor-hint", markup=False)
        with Horizontal(id="monitor-progress"):
            yield Label("epoch")
            # No percentage label: the status line has the numbers, and a label whose width follows its
            # value would shift the bars between repaints.
            yield ProgressBar(total=1, show_eta=False, show_percentage=False, id="progress-epoch")
            yield Label("run")
            yield ProgressBar(total=1, show_eta=False, show_percentage=False, id="progress-run")
        with TabbedContent(initial="log" if failed else "charts"):
            with TabPane("1 Charts", id="charts"):
                yield RunCharts(id="monitor-charts")
            with TabPane("2 Config", id="config"):
                with VerticalScroll():
                    yield ConfigView(id="monitor-config")
            with TabPane("3 Log", id="log"):
                yield WrappedLog(max_lines=LOG_LINES * 8, id="monitor-log")
        yield Footer()

    def on_mount(self) -> None:
        if not self.run.root.is_dir() or not self.run.is_run():
            self.query_one("#monitor-error", Static).update(f"{self.run.root} is not a run folder (no config.yaml)")
            self.query_one("#monitor-error").display = True
        self.follow()

    # -- the tail worker -----------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="monitor-tail")
    def follow(self) -> None:
        worker = get_current_worker()
        tail = JsonlTail(self.run.metrics)
        first = True
        seen_status: tuple | None = None
        log_sig: tuple | None = None
        while not worker.is_cancelled:
            records, reset = tail.read()
            status, status_problem = Status.read_checked(self.run.status)
            problem = _problem(self.run, status_problem)
            state = effective_state(status) if status is not None or self.run.is_run() else "unknown"
            log = None
            sig = file_signature(self.run.log)
            if sig != log_sig:
                log_sig = sig
                log = tail_lines(self.run.log, LOG_LINES) if sig is not None else []
            config = config_text(self.run.config) if first else None
            cadence = cadence_text(read_config(self.run.config)[0]) if first else None
            if first or records or reset or log is not None or (status, state, problem) != seen_status:
                seen_status = (status, state, problem)
                self.post_message(RunUpdate(records, reset, status, state, log, config, problem, cadence))
            first = False
            # `cancelled_event` wakes the wait at once when the screen or the app closes.
            if worker.cancelled_event.wait(self.app.poll_seconds):
                break

    def on_run_update(self, message: RunUpdate) -> None:
        self.status, self.state, self.problem = message.status, message.state, message.problem
        if message.records or message.reset:
            self.history.apply(message.records, message.reset)
            # One redraw per message, however many lines; the x axis spans the run's epochs.
            self.query_one(RunCharts).show(self.history, progress(self.history, self.status).epochs)
        if message.cadence is not None:
            self.query_one(RunCharts).set_cadence(message.cadence)
        if message.log is not None:
            self._show_log(message.log)
        if message.config is not None:
            self._show_config(message.config)
        self._show_status()

    # -- drawing -------------------------------------------------------------------------------
    def on_resize(self) -> None:
        if self.status is not None or self.history:
            self._show_status()  # the status line is fitted to the width

    def _show_status(self) -> None:
        pos = progress(self.history, self.status)
        eta = eta_seconds(self.history, self.status, self.state)
        width = max(20, (self.size.width or self.app.size.width) - 2)  # the line's padding: 1 cell each side
        line = self.query_one("#monitor-status", Static)
        line.update(status_line(self.state, self.status, pos, self.history, eta, width))
        full = status_line(self.state, self.status, pos, self.history, eta)
        line.tooltip = full if full != line.content else None  # what the width left out, on hover
        hint = self.query_one("#monitor-hint", Static)
        hint.update(resume_hint(self.state, self.run.last, self.run.root) if self.run.is_run() else "")
        hint.display = bool(hint.content)
        self.query_one("#progress-epoch", ProgressBar).update(total=pos.batches or 1, progress=pos.batch)
        overall = self.query_one("#progress-run", ProgressBar)
        overall.update(total=pos.epochs or 1, progress=pos.epoch + pos.epoch_fraction)
        message = self.status.message if self.status else ""
        text = ""
        if self.problem:
            text = f"unreadable: {self.problem}"
        elif self.state == "failed":
            text = f"failed: {message or 'no reason recorded'} — see the log (3)"
        elif self.state == "stopped" and self.status is not None and self.status.state in ("running", "starting"):
            text = "the trainer process is gone without recording why (killed?); see the log (3)"
        if self.run.is_run() or text:
            error = self.query_one("#monitor-error", Static)
            error.update(text)
            error.display = bool(text)

    def _show_log(self, lines: list[str]) -> None:
        if lines == self.log_lines:
            return
        self.log_lines = lines
        self.query_one("#monitor-log", WrappedLog).show_lines(
            lines or [f"(no {self.run.log.name} yet: a run started in the foreground logs to its terminal)"])

    def _show_config(self, text: str) -> None:
        self.query_one("#monitor-config", ConfigView).show_text(text)

    # -- actions -------------------------------------------------------------------------------
    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_maximize_chart(self) -> None:
        """Toggle the focused chart (the accuracy chart when none has the focus) full-screen."""
        toggle_maximized_chart(self, self.query_one(RunCharts).charts[0], (TabbedContent.__name__, "charts"))

    def action_attack(self) -> None:
        self.app.open_attack(self.run.root)

    def action_stop(self) -> None:
        if self.state not in ("running", "starting"):
            self.notify(f"the run is not running ({self.state})", severity="warning")
            return
        self._run_control("stop")

    def action_resume(self) -> None:
        self._run_control("resume")

    def _run_control(self, what: str) -> None:
        # The app's worker, not the screen's: leaving the monitor must not lose the "stopped" notice.
        # Quitting the app cancels it, and it checks for that while it waits: quitting never waits for a trainer.
        app = self.app  # taken here: a thread finds no app through a screen that was closed meanwhile
        app.run_worker(partial(self._control, app, what), name=f"monitor {what}", group="monitor-control",
                       thread=True, exit_on_error=False)

    def _control(self, app: App, what: str) -> None:
        """Thread worker: signal or launch the trainer; after a stop, tell when the trainer has exited."""
        worker = get_current_worker()
        name = self.run.root.name
        notify = partial(app.call_from_thread, app.notify)
        try:
            if what == "resume":
                pid = resume_detached(self.run.root)
                notify(f"{name}: resumed in the background (pid {pid})")
                return
            pid = request_stop(self.run.root)
        except Exception as exc:  # any failure is a notice, never a worker dying silently
            notify(f"{what} failed: {_reason(exc)}", severity="error")
            return
        notify(f"stopping {name} (pid {pid}): the trainer checkpoints first")
        start = time.monotonic()
        warned = False
        while pid_alive(pid):
            if worker.cancelled_event.wait(STOP_POLL_SECONDS):
                return  # the app is closing; the trainer stops on its own
            if not warned and time.monotonic() - start > STOP_PATIENCE_SECONDS:
                warned = True
                notify(f"{name} (pid {pid}) has not stopped after {STOP_PATIENCE_SECONDS:.0f} s; it stops at its "
                       "next batch (an evaluation in progress finishes first)", severity="warning")
        final = Status.read(self.run.status)
        state = effective_state(final) if final else "stopped"
        # The trainer's own last log line names best.pt (the best model); a resume continues from last.pt.
        notify(stop_notice(name, state, final.message if final else "", self.run.last, self.run.root),
               timeout=20)
