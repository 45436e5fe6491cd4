"""Home: every run under the runs folder, refreshed live; open, stop, resume, delete, compare, start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.markup import escape
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import get_current_worker

from ...runs import UNREADABLE, RunSummary, delete_run, list_runs, pid_alive, request_stop, resume_detached
from ..model.format import age, pct, state_markup
from ..widgets.keyed_table import KeyedTable
from .confirm import ConfirmScreen

# Most telling first: at 80 columns the table shows up to 'robust' and scrolls for the rest.
COLUMNS = (("", 1), ("run", 26), ("state", 10), ("epoch", 7), ("clean", 6), ("robust", 6),
           ("data/model/defense", 24), ("device", 6), ("age", 9))


@dataclass
class RunsUpdated(Message):
    runs: list[RunSummary]


class RunsScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "Open"),
        Binding("n", "new_run", "New run"),
        Binding("a", "attack", "Attack"),
        Binding("s", "stop", "Stop"),
        Binding("r", "resume", "Resume"),
        Binding("d", "delete", "Delete"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("S", "suites", "Suites", show=False),  # the footer keeps ? Help at 80 columns; help lists it
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, RunSummary] = {}
        self.marked: set[str] = set()
        self._order: list[str] = []

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="runs-empty")
        yield KeyedTable(COLUMNS, id="runs-table")
        yield Static("", id="run-detail")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()
        self.refresh_runs()
        self.watch_runs()

    # -- data --------------------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="runs-watch")
    def watch_runs(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            # `cancelled_event` wakes the wait at once when the screen or the app closes.
            if worker.cancelled_event.wait(1.0):
                break
            if self.is_current:  # under another screen nobody sees the table: read nothing
                self._post_runs()

    @work(thread=True, exit_on_error=False, group="runs-once")
    def refresh_soon(self) -> None:
        self._post_runs()

    def _post_runs(self) -> None:
        try:
            self.post_message(RunsUpdated(list_runs(self.app.runs_dir)))
        except Exception as exc:  # noqa: BLE001 - an unreadable folder must not stop the watcher
            self.app.call_from_thread(self.notify, f"cannot list {self.app.runs_dir}: {exc}", severity="error",
                                      markup=False)

    def on_screen_resume(self) -> None:
        # Back from another screen (a launch, a delete elsewhere): show the current state at once.
        if self._order:
            self.refresh_soon()

    def refresh_runs(self) -> None:
        """One synchronous read at mount: the first paint already shows the runs (status files only)."""
        self.show(list_runs(self.app.runs_dir))

    def on_runs_updated(self, message: RunsUpdated) -> None:
        self.show(message.runs)

    def show(self, summaries: list[RunSummary]) -> None:
        now = self.app.clock()
        self.runs = {str(s.path): s for s in summaries}
        self.marked &= set(self.runs)
        self._order = list(self.runs)
        self.query_one(KeyedTable).set_rows({key: self._row(s, now) for key, s in self.runs.items()})
        empty = self.query_one("#runs-empty", Static)
        empty.display = not summaries
        empty.update(f"No runs in {self.app.runs_dir} yet. Press [b]n[/b] to start one, [b]S[/b] for the suites.")
        self._show_detail()

    def _row(self, s: RunSummary, now: float) -> tuple:
        # String cells are markup: everything read from a run's files is escaped first.
        epoch = f"{s.epoch}/{s.epochs}"
        return ("●" if str(s.path) in self.marked else " ", escape(s.name), state_markup(escape(s.state)), epoch,
                pct(s.best_clean), pct(s.best_robust), escape(f"{s.dataset}/{s.model}/{s.defense}"),
                escape(s.device or "-"), age(s.started, now))

    def _current_key(self) -> str | None:
        return self.query_one(KeyedTable).current_key()

    def current(self) -> RunSummary | None:
        key = self._current_key()
        return self.runs.get(key) if key else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_detail()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_open()

    def _show_detail(self) -> None:
        s = self.current()
        detail = self.query_one("#run-detail", Static)
        if s is None:
            detail.update("")
            return
        path, message = escape(str(s.path)), escape(s.message)
        if s.state in ("failed", UNREADABLE) and s.message:
            detail.update(f"[bold red]{s.state}:[/] {message}")
        elif s.state in ("running", "starting"):
            # Completed epochs, as in the table and the monitor; the batch counts the epoch in progress.
            detail.update(f"{s.epoch}/{s.epochs} epochs done · batch {s.batch}/{s.batches} of the next · "
                          f"{escape(s.device or 'device ?')} · {path}", )
        else:
            detail.update(f"{escape(s.state)}{': ' + message if s.message else ''} · {path}")

    # -- actions ------------------------------------------------------------------------------
    def _need_run(self) -> RunSummary | None:
        s = self.current()
        if s is None:
            self.notify("no run selected", severity="warning")
        return s

    def _need_readable(self) -> RunSummary | None:
        """The selected run, unless its files cannot be used: then a notice says why, and nothing opens."""
        s = self._need_run()
        if s is not None and s.state == UNREADABLE:
            self._refuse(s)
            return None
        return s

    def _refuse(self, s: RunSummary) -> None:
        self.notify(f"{s.name} is unreadable: {s.message}", severity="error", markup=False)

    def action_open(self) -> None:
        if (s := self._need_readable()) is not None:
            self.app.open_monitor(s.path)

    def action_new_run(self) -> None:
        self.app.open_new_run()

    def action_suites(self) -> None:
        self.app.open_suites()

    def action_attack(self) -> None:
        s = self.current()
        if s is not None and s.state == UNREADABLE:
            self._refuse(s)
            return
        self.app.open_attack(s.path if s is not None else None)

    def action_mark(self) -> None:
        if (s := self._need_run()) is None:
            return
        key = str(s.path)
        self.marked ^= {key}
        self.query_one(KeyedTable).set_cell(key, "mark", "●" if key in self.marked else " ")

    def action_compare(self) -> None:
        keys = [k for k in self._order if k in self.marked]
        if len(keys) < 2:
            self.notify("mark two or more runs with space, then press c", severity="warning")
            return
        if bad := [self.runs[k] for k in keys if self.runs[k].state == UNREADABLE]:
            self._refuse(bad[0])
            return
        self.app.open_compare([Path(k) for k in keys])

    def action_stop(self) -> None:
        if (s := self._need_readable()) is None:
            return
        if s.state not in ("running", "starting"):
            self.notify(f"{s.name} is not running ({s.state})", severity="warning", markup=False)
            return
        self.notify(f"stopping {s.name} (it checkpoints first)", markup=False)
        self._stop(s.path, s.name)

    @work(thread=True, exit_on_error=False, group="control")
    def _stop(self, path: Path, name: str) -> None:
        # Signal, then wait for the checkpoint in a loop that a closing app can cancel at once.
        worker = get_current_worker()
        try:
            pid = request_stop(path)
        except Exception as exc:  # noqa: BLE001 - every failure is a one-line notice
            self.app.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        while pid_alive(pid):
            if worker.cancelled_event.wait(0.2):
                return
        self.app.call_from_thread(self.notify, f"{name}: stopped", markup=False)
        self._post_runs()

    def action_resume(self) -> None:
        if (s := self._need_readable()) is not None:
            self._control(resume_detached, s.path, f"{s.name}: resumed in the background")

    def action_delete(self) -> None:
        if (s := self._need_run()) is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._control(delete_run, s.path, f"deleted {s.name}")
        self.app.push_screen(ConfirmScreen(f"Delete run [b]{escape(s.name)}[/b] with its checkpoints and "
                                           f"evaluations?\n{escape(str(s.path))}"), answered)

    @work(thread=True, exit_on_error=False, group="control")
    def _control(self, fn, path: Path, done: str) -> None:
        # Resume starts a process and delete removes a folder tree: off the UI thread.
        try:
            fn(path)
        except Exception as exc:  # noqa: BLE001 - WorkbenchError or OSError: a one-line notice, never silence
            self.app.call_from_thread(self.notify, str(exc) or type(exc).__name__, severity="error", markup=False)
            return
        self.app.call_from_thread(self.notify, done, markup=False)
        self._post_runs()
