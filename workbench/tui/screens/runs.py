"""Home: every run under the runs folder, refreshed live; sort, filter, open, stop, resume, delete, compare."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rich.markup import escape
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static
from textual.worker import get_current_worker

from ...runs import UNREADABLE, RunSummary, delete_run, list_runs, pid_alive, request_stop, resume_detached
from ..model.format import pct, since, state_markup
from ..widgets.keyed_table import KeyedTable
from .confirm import ConfirmScreen

# Most telling first: at 80 columns the table shows up to 'age' (time since the run started) and the
# rest scroll into view, named by the hint line under the table. Every cell fits its width (ages are
# at most 5 characters: 42m, 3h05m, 2d).
COLUMNS = (("", 1), ("run", 28), ("state", 10), ("epoch", 7), ("clean", 6), ("robust", 6), ("age", 5),
           ("data/model/defense", 24), ("device", 6), ("updated", 7))
SETUP = "data/model/defense"


@dataclass(frozen=True)
class SortKey:
    value: Callable[[RunSummary], Any]  # None sorts last in both directions
    descending: bool  # the first order: highest accuracy and newest run first, names A to Z
    words: tuple[str, str]  # how the order reads: (first, reversed)


def _number(value: Any) -> float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value else None


# By state: what needs watching first (live, then what stopped short), what is done last.
STATE_ORDER = ("running", "starting", "stale", "failed", "crashed", UNREADABLE, "stopped", "cancelled", "finished")
_TEXT_WORDS = ("A to Z", "Z to A")
_HIGH_WORDS = ("highest first", "lowest first")
SORTS: dict[str, SortKey] = {
    "age": SortKey(lambda s: _number(s.started) or None, True, ("newest first", "oldest first")),
    "run": SortKey(lambda s: s.name.lower(), False, _TEXT_WORDS),
    "state": SortKey(lambda s: STATE_ORDER.index(s.state) if s.state in STATE_ORDER else len(STATE_ORDER), False,
                     ("live first", "finished first")),
    "epoch": SortKey(lambda s: _number(s.epoch), True, _HIGH_WORDS),
    "clean": SortKey(lambda s: _number(s.best_clean), True, _HIGH_WORDS),
    "robust": SortKey(lambda s: _number(s.best_robust), True, _HIGH_WORDS),
    SETUP: SortKey(lambda s: f"{s.dataset}/{s.model}/{s.defense}".lower(), False, _TEXT_WORDS),
    "device": SortKey(lambda s: s.device or None, False, _TEXT_WORDS),
    "updated": SortKey(lambda s: _number(s.updated) or None, True, ("latest first", "stalest first")),
}
SORT_CYCLE = ["age", "run", "state", "epoch", "clean", "robust", SETUP, "device", "updated"]


def sort_runs(summaries: list[RunSummary], column: str, reverse: bool = False) -> list[RunSummary]:
    """`summaries` ordered by `column` (its first-press direction, flipped by `reverse`); runs without a
    value come last either way, and ties keep the given order (newest first from list_runs)."""
    key = SORTS[column]
    valued = [(key.value(s), s) for s in summaries]
    present = [pair for pair in valued if pair[0] is not None]
    present.sort(key=lambda pair: pair[0], reverse=key.descending != reverse)
    return [s for _, s in present] + [s for value, s in valued if value is None]


def matches(s: RunSummary, text: str) -> bool:
    """Every word of `text` occurs (ignoring case) in the run's name, dataset, model or defense."""
    haystack = f"{s.name} {s.dataset} {s.model} {s.defense}".lower()
    return all(word in haystack for word in text.lower().split())


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
        # Out of the footer, so it keeps ? Help at 80 columns; help and the hint line under the table list them.
        Binding("S", "suites", "Suites", show=False),
        Binding("o", "sort_next", "Sort by the next column", show=False),
        Binding("O", "sort_reverse", "Reverse the sort", show=False),
        Binding("slash", "filter", "Filter runs", key_display="/", show=False),
        Binding("escape", "clear_filter", "Clear the filter", show=False),
        Binding("q", "app.quit", "Quit"),
    ]

    DEFAULT_CSS = """
    #runs-filter { display: none; height: 1; border: none; padding: 0 1; }
    #runs-filter.shown { display: block; }
    #runs-bar { height: auto; max-height: 2; padding: 0 1; color: $text-muted; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, RunSummary] = {}
        self.marked: set[str] = set()
        self._order: list[str] = []  # every run, newest first (as listed)
        self.shown: list[str] = []  # the rows: filtered and sorted
        self.sort_column = "age"
        self.sort_reversed = False
        self.filter_text = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield Input(placeholder="filter: words in the name, dataset, model or defense (escape clears)",
                    id="runs-filter")
        yield Static("", id="runs-empty")
        yield KeyedTable(COLUMNS, id="runs-table")
        yield Static("", id="runs-bar")
        yield Static("", id="run-detail")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.focus()
        self.refresh_runs()
        self.watch(table, "scroll_x", lambda _: self._show_bar(), init=False)
        self.watch_runs()

    def on_resize(self) -> None:
        self.call_after_refresh(self._show_bar)  # the table's new width is known after the layout

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
        self.marked &= set(self.runs)  # a mark survives the filter: it hides rows, it deletes nothing
        self._order = list(self.runs)
        visible = sort_runs([s for s in summaries if matches(s, self.filter_text)], self.sort_column,
                            self.sort_reversed)
        self.shown = [str(s.path) for s in visible]
        self.query_one(KeyedTable).set_rows({str(s.path): self._row(s, now) for s in visible})
        empty = self.query_one("#runs-empty", Static)
        empty.display = not visible
        if summaries:
            empty.update(Text(f"No run matches '{self.filter_text}': escape clears the filter."))
        else:
            empty.update(f"No runs in {escape(str(self.app.runs_dir))} yet. Press [b]n[/b] to start one, "
                         f"[b]S[/b] for the suites.")
        self._show_bar()
        self._show_detail()

    def _row(self, s: RunSummary, now: float) -> tuple:
        # String cells are markup: everything read from a run's files is escaped first.
        epoch = f"{s.epoch}/{s.epochs}"
        return ("●" if str(s.path) in self.marked else " ", escape(s.name), state_markup(escape(s.state)), epoch,
                pct(s.best_clean), pct(s.best_robust), since(s.started, now),
                escape(f"{s.dataset}/{s.model}/{s.defense}"), escape(s.device or "-"), since(s.updated, now))

    def hidden_columns(self) -> tuple[list[str], list[str]]:
        """The columns not wholly in view, left and right of it (the table is narrower than its columns)."""
        table = self.query_one(KeyedTable)
        width = table.scrollable_content_region.width
        left: list[str] = []
        right: list[str] = []
        if width <= 0:
            return left, right
        x = 0
        for column in table.columns.values():
            end = x + column.get_render_width(table)
            if x < table.scroll_x:
                left.append(str(column.label) or "mark")
            elif end > table.scroll_x + width:
                right.append(str(column.label))
            x = end
        return left, right

    def _show_bar(self) -> None:
        """One line under the table: the order, the filter and the keys for them, and the columns out of view."""
        if not self.is_mounted:
            return
        key = SORTS[self.sort_column]
        parts = [f"sort: {self.sort_column}, {key.words[self.sort_reversed]} (o/O)"]
        if self.filter_text:
            parts.append(f"filter '{self.filter_text}': {len(self.shown)} of {len(self.runs)} runs (esc clears)")
        else:
            parts.append("/ filter")
        bar = self.query_one("#runs-bar", Static)
        left, right = self.hidden_columns()
        named = parts + [f"{arrow} {', '.join(names)}" for arrow, names in (("←", left), ("→", right)) if names]
        counted = parts + [f"{arrow} {len(names)} more column{'s' * (len(names) > 1)}"
                           for arrow, names in (("←", left), ("→", right)) if names]
        text = " · ".join(named)
        bar.update(Text(text if len(text) <= bar.content_region.width else " · ".join(counted)))

    # -- sort and filter ----------------------------------------------------------------------
    def sort_by(self, column: str, reverse: bool = False) -> None:
        self.sort_column, self.sort_reversed = column, reverse
        self.show(list(self.runs.values()))

    def action_sort_next(self) -> None:
        self.sort_by(SORT_CYCLE[(SORT_CYCLE.index(self.sort_column) + 1) % len(SORT_CYCLE)])

    def action_sort_reverse(self) -> None:
        self.sort_by(self.sort_column, not self.sort_reversed)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        column = str(event.column_key.value)
        if column in SORTS:  # a click on the header sorts by it; a second click reverses
            self.sort_by(column, not self.sort_reversed if column == self.sort_column else False)

    def action_filter(self) -> None:
        field = self.query_one("#runs-filter", Input)
        field.add_class("shown")
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "runs-filter":
            self.filter_text = event.value.strip()
            self.show(list(self.runs.values()))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "runs-filter":
            event.input.remove_class("shown")  # the hint line names the filter; `/` edits it again
            self.query_one(DataTable).focus()

    def action_clear_filter(self) -> None:
        field = self.query_one("#runs-filter", Input)
        if not self.filter_text and not field.has_class("shown"):
            return  # nothing to clear: escape does nothing here
        field.value = ""  # posts Changed, which shows every run again
        self.filter_text = ""
        field.remove_class("shown")
        self.query_one(DataTable).focus()
        self.show(list(self.runs.values()))

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
        keys = [k for k in self.shown if k in self.marked] + [k for k in self._order
                                                                if k in self.marked and k not in self.shown]
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
