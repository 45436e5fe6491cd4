"""Suites: every experiment suite under the runs folder, the model x seed grid of its cells (live), and the
suite's table with its chart of robust accuracy vs eps. Enter on a cell opens the cell's run in the monitor.

A thread worker reads the suites' files every second while the screen is shown and posts what it read; the
screen only draws. The table is read only while its tab is shown, and again when an evaluation lands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.cells import cell_len
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from ...suites.layout import SuitePaths
from ..model.suites import STATE_STYLES, GridCell, SuiteGrid, SuiteRow, TableView, load_grid, suite_rows, table_view
from ..widgets.keyed_table import KeyedTable
from ..widgets.line_chart import LineChart, toggle_maximized_chart

COLUMNS = (("suite", 24), ("budgets", 16), ("done", 7), ("failed", 6), ("running", 7))
REFRESH_SECONDS = 1.0  # the selected suite's cells
LIST_EVERY = 5  # refreshes: the list reads every cell of every suite, so less often
WIDE = 110  # columns from which the table and its chart sit side by side
TABLE_LEGEND = "% · mean ± std over seeds ([95% CI] with one seed) · chart: worst case per eps"


@dataclass
class SuitesRead(Message):
    rows: list[SuiteRow] | None  # None: not read this time
    wanted: tuple[str | None, str | None]  # the (suite, budget) this read was for
    grid: SuiteGrid | None
    table: TableView | None = None  # None: not read this time


def grid_cell(cell: GridCell | None) -> Text:
    if cell is None:
        return Text("—", style="dim")
    text = cell.text()
    return Text.assemble((cell.state, STATE_STYLES.get(cell.state, "dim")), text[len(cell.state):])


class SuitesScreen(Screen):
    BINDINGS = [
        Binding("enter", "open", "Open run"),
        Binding("t", "toggle_table", "Table/cells"),
        Binding("b", "budget", "Budget"),
        Binding("m", "maximize_chart", "Max chart"),
        Binding("1", "tab('cells')", "Cells tab", show=False),
        Binding("2", "tab('table')", "Table tab", show=False),
        Binding("escape", "back", "Back"),
    ]

    DEFAULT_CSS = """
    SuitesScreen #suites-empty { padding: 1 2; color: $text-muted; }
    SuitesScreen #suites-list { height: auto; max-height: 7; }
    SuitesScreen #suite-title { padding: 0 1; height: 1; color: $text-muted; text-wrap: nowrap;
                                text-overflow: ellipsis; }
    SuitesScreen TabbedContent { height: 1fr; }
    SuitesScreen TabPane { padding: 0; height: 1fr; }
    SuitesScreen #suite-grid { height: auto; max-height: 1fr; }
    SuitesScreen #cell-detail { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    SuitesScreen #suite-table-pane { height: 1fr; }
    SuitesScreen #suite-table { height: 1fr; }
    SuitesScreen.-wide #suite-table-pane { layout: horizontal; }
    SuitesScreen.-wide #suite-table { width: auto; max-width: 60%; }
    SuitesScreen.-wide #suite-chart { width: 1fr; }
    SuitesScreen #suite-notes { height: auto; max-height: 3; padding: 0 1; color: $text-muted; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, SuiteRow] = {}
        self.selected: str | None = None
        self.budgets: dict[str, str] = {}  # suite -> the budget picked with b
        self.grid: SuiteGrid | None = None
        self.table: TableView | None = None
        self.table_shown = False
        self._table_sig: tuple | None = None  # the grid signature the shown table was read at
        self._grid_shape: tuple | None = None
        self._grid_cells: dict[tuple[str, int], Text] = {}
        self._table_shape: tuple | None = None
        self._table_rows: dict[str, tuple[Text, ...]] = {}
        self.sub_title = "suites"

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="suites-empty", markup=False)
        yield KeyedTable(COLUMNS, id="suites-list")
        yield Static("", id="suite-title")
        with TabbedContent(initial="cells"):
            with TabPane("1 Cells", id="cells"):
                yield DataTable(id="suite-grid", cursor_type="cell", zebra_stripes=True)
                yield Static("", id="cell-detail", markup=False)
            with TabPane("2 Table", id="table"):
                with Container(id="suite-table-pane"):
                    yield DataTable(id="suite-table", cursor_type="row", zebra_stripes=True)
                    yield LineChart("robust acc. vs eps (worst case, seed mean)", "eps", ylim=(0.0, 1.0),
                                    legend="header", yticks="percent", id="suite-chart")
                yield Static("", id="suite-notes", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        # One synchronous read: the first paint already shows the suites and the first one's cells.
        rows = suite_rows(self.app.runs_dir)
        self._show_rows(rows)
        self._show_grid(self._read_grid(self._wanted()))
        grid = self.query_one("#suite-grid", DataTable)
        (grid if len(rows) == 1 else self.query_one("#suites-list", DataTable)).focus()
        self.watch_suites()

    def on_resize(self) -> None:
        self.set_class(self.size.width >= WIDE, "-wide")

    # -- data (thread workers) -------------------------------------------------------------------
    @work(thread=True, exclusive=True, exit_on_error=False, group="suites-watch")
    def watch_suites(self) -> None:
        worker = get_current_worker()
        tick = 0
        # `cancelled_event` wakes the wait at once when the screen or the app closes.
        while not worker.cancelled_event.wait(REFRESH_SECONDS):
            if self.is_current:  # under the monitor nobody sees the grid: read nothing
                tick += 1
                self._post_read(force_table=False, with_rows=tick % LIST_EVERY == 0)

    @work(thread=True, exclusive=True, exit_on_error=False, group="suites-once")
    def read_soon(self) -> None:
        self._post_read(force_table=True, with_rows=True)

    def _post_read(self, force_table: bool, with_rows: bool) -> None:
        wanted = self._wanted()
        try:
            rows = suite_rows(self.app.runs_dir) if with_rows else None
            grid = self._read_grid(wanted)
            table = None
            if self.table_shown and grid is not None and (force_table or grid.signature() != self._table_sig):
                table = table_view(SuitePaths.under(self.app.runs_dir, grid.suite), grid.budget)
        except Exception as exc:  # noqa: BLE001 - an unreadable file must not stop the watcher
            self.app.call_from_thread(self.notify, f"cannot read the suites: {exc}", severity="error", markup=False)
            return
        self.post_message(SuitesRead(rows, wanted, grid, table))

    def _wanted(self) -> tuple[str | None, str | None]:
        return self.selected, self.budgets.get(self.selected or "")

    def _read_grid(self, wanted: tuple[str | None, str | None]) -> SuiteGrid | None:
        return load_grid(SuitePaths.under(self.app.runs_dir, wanted[0]), wanted[1]) if wanted[0] else None

    def on_suites_read(self, message: SuitesRead) -> None:
        if message.rows is not None:
            self._show_rows(message.rows)
        if message.wanted != self._wanted():
            return  # the user picked another suite or budget meanwhile: its own read is on the way
        self._show_grid(message.grid)
        if message.table is not None and message.grid is not None:
            self._show_table(message.table, message.grid.signature())

    def on_screen_resume(self) -> None:
        self.read_soon()  # back from the monitor: show the current state at once

    # -- drawing ---------------------------------------------------------------------------------
    def _show_rows(self, rows: list[SuiteRow]) -> None:
        self.rows = {r.name: r for r in rows}
        self.query_one("#suites-list", KeyedTable).set_rows({r.name: self._row(r) for r in rows})
        empty = self.query_one("#suites-empty", Static)
        empty.update(f"No suites under {self.app.runs_dir / 'suites'} — run `workbench suite run quickstart`")
        empty.display = not rows
        for selector in ("#suite-title", TabbedContent):
            self.query_one(selector).display = bool(rows)
        self._show_list()
        if self.selected not in self.rows:
            self._select(self.query_one("#suites-list", KeyedTable).current_key())

    @staticmethod
    def _row(r: SuiteRow) -> tuple:
        failed = Text(str(r.failed), style="bold red" if r.failed else "dim")
        return (Text(r.name), Text(", ".join(r.budgets)), f"{r.done}/{r.total}", failed,
                Text(str(r.active), style="bold green" if r.active else "dim"))

    def _select(self, name: str | None) -> None:
        if name == self.selected:
            return
        self.selected = name
        self._show_title()
        if name is not None and self.is_mounted:
            self.read_soon()

    def _show_title(self) -> None:
        # Text pieces, not markup: suite and budget names come from files.
        grid, name = self.grid, self.selected
        if not name:
            title = Text()
        elif grid is None or grid.suite != name:
            title = Text.assemble((name, "bold"), " · no budget run yet" if grid is None else " · reading…")
        else:
            title = Text.assemble((grid.suite, "bold"), " · budget ", (grid.budget, "bold"))
            if len(grid.budgets) > 1:
                title.append(f" ({grid.budgets.index(grid.budget) + 1} of {len(grid.budgets)}: b for the next)")
            row = self.rows.get(grid.suite)
            if row is not None and row.description:
                title.append(f" · {row.description}")
        self.query_one("#suite-title", Static).update(title)

    def _show_grid(self, grid: SuiteGrid | None) -> None:
        self.grid = grid
        table = self.query_one("#suite-grid", DataTable)
        cells = {} if grid is None else {(m, s): grid_cell(grid.cell(m, s)) for m in grid.models for s in grid.seeds}
        shape = None if grid is None else (grid.suite, grid.budget, grid.models, grid.seeds)
        if shape != self._grid_shape:
            table.clear(columns=True)
            table.show_row_labels = True
            for seed in grid.seeds if grid else ():
                table.add_column(f"seed {seed}", key=str(seed))
            for model in grid.models if grid else ():
                table.add_row(*(cells[(model, s)] for s in grid.seeds), key=model, label=Text(model, style="bold"))
            self._grid_shape = shape
        else:
            # Same suite, budget, models and seeds: change the cells that changed, so the cursor stays put.
            for (model, seed), text in cells.items():
                if text != self._grid_cells.get((model, seed)):
                    table.update_cell(model, str(seed), text, update_width=True)
        self._grid_cells = cells
        self._show_title()
        self._show_detail()

    def current_cell(self) -> GridCell | None:
        grid, table = self.grid, self.query_one("#suite-grid", DataTable)
        if grid is None or table.row_count == 0:
            return None
        row, column = table.cursor_coordinate
        if row >= len(grid.models) or column >= len(grid.seeds):
            return None
        return grid.cell(grid.models[row], grid.seeds[column])

    def _show_detail(self) -> None:
        cell = self.current_cell()
        self.query_one("#cell-detail", Static).update(cell.detail() if cell is not None else "")

    def _show_table(self, view: TableView, signature: tuple) -> None:
        self.table, self._table_sig = view, signature
        table = self.query_one("#suite-table", DataTable)
        rows = {cells[0]: tuple(Text(c) for c in cells) for cells in view.rows}
        # Columns as wide as their widest cell, given here: DataTable's own measuring runs on idle, and under
        # load it has left the columns at their labels' widths, cutting the numbers.
        widths = tuple(max([cell_len(label), *(cells[i].cell_len for cells in rows.values())])
                       for i, label in enumerate(view.columns))
        shape = (view.columns, tuple(rows), widths)
        if shape == self._table_shape:
            # An evaluation landed and every column still fits: change the numbers in place, so the cursor
            # and scroll stay. Otherwise the table is rebuilt, and the cursor goes back to its row.
            for key, cells in rows.items():
                for i, (cell, was) in enumerate(zip(cells, self._table_rows[key])):
                    if cell != was:
                        table.update_cell(key, str(i), cell)
        else:
            cursor = table.cursor_row
            table.clear(columns=True)
            for i, label in enumerate(view.columns):
                table.add_column(label, key=str(i), width=widths[i])
            for key, cells in rows.items():
                table.add_row(*cells, key=key)
            table.move_cursor(row=min(cursor, len(rows) - 1) if self._table_shape and rows else 0)
            self._table_shape = shape
        self._table_rows = rows
        chart = self.query_one("#suite-chart", LineChart)
        if view.series != chart.series:
            chart.set_series(view.series)
        legend = TABLE_LEGEND if view.rows else "no evaluation saved yet: the table fills in as cells finish"
        self.query_one("#suite-notes", Static).update(" ".join((legend, *view.notes)))

    # -- events and actions ----------------------------------------------------------------------
    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "suites-list":
            self._select(self.query_one("#suites-list", KeyedTable).current_key())

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "suites-list":
            self.query_one("#suite-grid", DataTable).focus()

    def on_data_table_cell_highlighted(self, event: DataTable.CellHighlighted) -> None:
        if event.data_table.id == "suite-grid":
            self._show_detail()

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        if event.data_table.id == "suite-grid":
            self.action_open()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        shown = event.pane.id == "table"
        if shown == self.table_shown:
            return  # the first tab, at mount
        self.table_shown = shown
        self._show_list()
        self.query_one("#suite-table" if shown else "#suite-grid", DataTable).focus()
        if shown:
            self.read_soon()

    def _show_list(self) -> None:
        # The table tab takes the list's rows for the table and its chart; the title still names the suite.
        self.query_one("#suites-list").display = bool(self.rows) and not self.table_shown

    def action_open(self) -> None:
        if self.focused is self.query_one("#suites-list"):
            self.query_one("#suite-grid", DataTable).focus()
            return
        cell = self.current_cell()
        if cell is None:
            self.notify("no cell selected", severity="warning")
        elif cell.run is None:
            self.notify(f"{cell.model} seed {cell.seed} has no run folder yet ({cell.state})", severity="warning",
                        markup=False)
        else:
            self.app.open_monitor(Path(cell.run))

    def action_toggle_table(self) -> None:
        self.action_tab("cells" if self.table_shown else "table")

    def action_tab(self, tab: str) -> None:
        if self.rows:
            self.query_one(TabbedContent).active = tab

    def action_maximize_chart(self) -> None:
        """The table tab's chart full-screen (the table tab brought in front), or back."""
        toggle_maximized_chart(self, self.query_one("#suite-chart", LineChart), (TabbedContent.__name__, "table"))

    def action_budget(self) -> None:
        grid = self.grid
        if grid is None or grid.suite != self.selected or len(grid.budgets) < 2:
            self.notify("this suite has one budget run (run another with `workbench suite run SUITE --budget B`)",
                        severity="warning", markup=False)
            return
        following = grid.budgets[(grid.budgets.index(grid.budget) + 1) % len(grid.budgets)]
        self.budgets[grid.suite] = following
        self.read_soon()

    def action_back(self) -> None:
        self.app.pop_screen()
