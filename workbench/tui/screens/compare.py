"""Compare: two or more runs overlaid (training curves, robust accuracy vs eps), their config differences,
and their robust accuracy per attack × eps with 95% intervals (`x` exports it as md, csv, tex and json).

Run folders only (a checkpoint's run is its folder). A thread worker follows the runs' files
(new metrics lines only; other files when a stat says they changed), so a run still training keeps
its curves current; the table changes the cells that changed, so the cursor stays put.
`m` maximises the focused chart (tab moves the focus between charts); `m` or escape restores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static, TabbedContent, TabPane
from textual.worker import get_current_worker

from ...errors import WorkbenchError
from ...compare.table import export_table
from ..model.compare import (EXPORT_FOLDER, RunFollower, RunView, config_diff, epoch_span, export_stem,
                             robust_caption, robust_rows, robust_table, short_names, show_value)
from ..model.format import state_markup
from ..model.history import best_text
from ..widgets.line_chart import LineChart, toggle_maximized_chart
from ..widgets.run_charts import sparse

# Shown as their own rows at the top of the table, so not repeated among the differences.
SUMMARY_KEYS = ("dataset", "model.name", "defense.name")
RECHECK_SECONDS = 1.0
# The per-epoch charts: (id, title, the epoch records' field, y ticks). Titles stay short: at 80 columns a
# chart is 40 cells wide, and its title shares the first line with the legend.
EPOCH_CHARTS = (("cmp-clean", "clean accuracy", "test_clean_acc", "percent"),
                ("cmp-robust", "robust accuracy", "test_robust_acc", "percent"),
                ("cmp-loss", "train loss", "train_loss", "round"))


@dataclass
class RunsLoaded(Message):
    views: list[RunView]


class CompareScreen(Screen):
    BINDINGS = [
        Binding("e", "toggle_attacks", "Worst case / per attack"),
        Binding("m", "maximize_chart", "Max chart"),
        Binding("x", "export", "Export table"),
        Binding("1", "tab('curves')", "Curves tab", show=False),
        Binding("2", "tab('diff')", "Differences tab", show=False),
        Binding("3", "tab('robust')", "Robust accuracy tab", show=False),
        Binding("escape", "back", "Back"),
    ]

    DEFAULT_CSS = """
    CompareScreen #compare-notes { padding: 0 1; height: auto; max-height: 4; color: $text-muted; }
    CompareScreen TabbedContent { height: 1fr; }
    CompareScreen TabPane { padding: 0; height: 1fr; }
    CompareScreen #compare-charts { grid-size: 2 2; grid-rows: 1fr 1fr; grid-columns: 1fr 1fr; height: 1fr; }
    CompareScreen #compare-table, CompareScreen #compare-robust { height: 1fr; }
    CompareScreen #robust-caption { padding: 0 1; height: auto; max-height: 2; color: $text-muted; }
    """

    def __init__(self, run_paths: list[Path]) -> None:
        super().__init__()
        self.run_paths = [Path(p) for p in run_paths]
        self.views: list[RunView] = []
        self.per_attack = False
        self._diff_count = 0
        self._table_shape: tuple | None = None  # (columns, row keys) the table was built with
        self._table_rows: dict[str, list] = {}  # row key -> the cells shown
        self._robust_shown: tuple | None = None  # (columns, rows) of the robust table
        self.sub_title = "compare " + ", ".join(p.name for p in self.run_paths)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="compare-notes", markup=False)
        with TabbedContent(initial="curves"):
            with TabPane("1 Curves", id="curves"):
                with Grid(id="compare-charts"):
                    for chart_id, title, _, yticks in EPOCH_CHARTS:
                        yield LineChart(title, legend="header", xticks="integer", yticks=yticks, id=chart_id)
                    yield LineChart("robust acc vs eps", legend="header", yticks="percent", id="cmp-eps")
            with TabPane("2 Differences", id="diff"):
                yield DataTable(id="compare-table", zebra_stripes=True, cursor_type="row")
            with TabPane("3 Robust", id="robust"):
                yield Static("", id="robust-caption", markup=False)
                yield DataTable(id="compare-robust", zebra_stripes=True, cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        if len(self.run_paths) < 2:
            self.notify("compare needs two or more runs", severity="warning")
        for chart in self.query(LineChart):
            chart.can_focus = True  # so `m` can maximise the focused one
        self.follow()

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare-load")
    def follow(self) -> None:
        worker = get_current_worker()
        followers = [RunFollower(p) for p in self.run_paths]
        while not worker.is_cancelled:
            changed = [f.refresh() for f in followers]  # a list: every follower reads, not just the first
            if any(changed):
                self.post_message(RunsLoaded([f.view() for f in followers]))
            if worker.cancelled_event.wait(max(RECHECK_SECONDS, self.app.poll_seconds)):
                break

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        self.views = message.views
        self._show_charts()
        self._show_table()
        self._show_robust()
        self._show_notes()

    # -- drawing -------------------------------------------------------------------------------
    def _readable(self) -> list[RunView]:
        return [v for v in self.views if not v.error]

    def _show_charts(self) -> None:
        views = self._readable()
        names = short_names([v.name for v in views])
        span = epoch_span(views)
        for chart_id, _, key, _ in EPOCH_CHARTS:
            series = {n: v.history.epoch_series(key) for n, v in zip(names, views)}
            # Robust accuracy is measured every few epochs: its points as markers, not a line through nothing.
            _set_series(self.query_one(f"#{chart_id}", LineChart), series,
                        [n for n, (xs, _) in series.items() if xs and sparse(xs)], span)
        series = {}
        for name, v in zip(names, views):
            if v.evals is None:
                continue
            curves = v.evals.attacks if self.per_attack else v.evals.worst
            for label, xy in curves.items():
                series[name if len(curves) == 1 and not self.per_attack else f"{name} {label}"] = xy
        _set_series(self.query_one("#cmp-eps", LineChart), series, series)  # each point an evaluation: a marker

    def _show_table(self) -> None:
        views = self._readable()
        columns = (("", "key"), *((v.name, f"run{i}") for i, v in enumerate(views)))
        flat = [(key, values) for key, values in config_diff({str(i): v.config for i, v in enumerate(views)})
                if key not in SUMMARY_KEYS]
        summary = [
            ("state", [state_markup(v.state) for v in views]),
            ("dataset", [str(v.config.get("dataset", "?")) for v in views]),
            ("model", [show_value(_get(v.config, "model.name")) for v in views]),
            ("defense", [show_value(_get(v.config, "defense.name")) for v in views]),
            ("epochs", [f"{v.status.epoch if v.status else len(v.history.epochs)}/{v.config.get('epochs', '?')}"
                        for v in views]),
            ("best clean", [best_text(v.best("clean")) for v in views]),
            ("best robust", [best_text(v.best("robust")) for v in views]),
            ("evaluation", [Text(v.evals.report.name) if v.evals else "none" for v in views]),
        ]
        # Text for every value read from a run's files: a str cell is markup, and "[/x]" in a file would crash it.
        rows = {f"summary:{key}": [Text(key, style="bold"), *(Text.from_markup(c) if key == "state" else
                                                              c if isinstance(c, Text) else Text(c) for c in cells)]
                for key, cells in summary}
        # Text, not str: a str cell is read as markup, and YAML lists look like tags.
        rows.update({key: [Text(key), *[Text(show_value(x)) for x in values]] for key, values in flat})
        self._diff_count = len(flat)
        table = self.query_one("#compare-table", DataTable)
        shape = (columns, tuple(rows))
        if shape == self._table_shape:
            # Same rows and columns (a compared run trains on): change only the cells that changed,
            # so the cursor and the scroll position stay where the user left them.
            for row_key, cells in rows.items():
                old = self._table_rows[row_key]
                for (_, column_key), cell, was in zip(columns, cells, old):
                    if cell != was:
                        table.update_cell(row_key, column_key, cell, update_width=True)
        else:
            table.clear(columns=True)
            for label, key in columns:
                table.add_column(label, key=key)
            for row_key, cells in rows.items():
                table.add_row(*cells, key=row_key)
            self._table_shape = shape
        self._table_rows = rows

    def _show_robust(self) -> None:
        """Robust accuracy per attack × eps: a row per metric, a column per evaluated run (its legend name)."""
        views = self._readable()
        names = dict(zip((v.name for v in views), short_names([v.name for v in views])))
        self.query_one("#robust-caption", Static).update(robust_caption(views, names))
        table = robust_table(views)
        columns = ("metric", *(names.get(run, run) for run in table.models))
        rows = tuple((name, tuple(cells)) for name, cells in robust_rows(table))
        if (columns, rows) == self._robust_shown:
            return  # unchanged: keep the cursor where it is
        widget = self.query_one("#compare-robust", DataTable)
        widget.clear(columns=True)
        for i, label in enumerate(columns):
            widget.add_column(Text(label), key=f"c{i}")
        for name, cells in rows:
            # Text: a metric name comes from a report, and a str cell is read as markup.
            widget.add_row(Text(name), *(Text(c, justify="right") for c in cells), key=name)
        self._robust_shown = (columns, rows)

    def _show_notes(self) -> None:
        notes = [v.error for v in self.views if v.error]
        readable = self._readable()
        missing = [v.name for v in readable if v.evals is None]
        if missing:
            notes.append("no evaluation yet (attack it from its monitor with a): " + ", ".join(missing))
        if len(readable) >= 2:
            diffs = self._diff_count
            notes.append(f"{len(readable)} runs · {diffs} config {'keys differ' if diffs != 1 else 'key differs'} "
                         "(2: table) · e: worst case / per attack")
        else:
            notes.append("compare needs two or more readable runs")
        self.query_one("#compare-notes", Static).update("\n".join(notes))

    # -- actions -------------------------------------------------------------------------------
    def action_toggle_attacks(self) -> None:
        self.per_attack = not self.per_attack
        self._show_charts()
        self.notify("robust accuracy vs eps: " + ("per attack" if self.per_attack else "worst case per protocol"))

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab

    def action_maximize_chart(self) -> None:
        """Toggle the focused chart (the clean accuracy chart when none has the focus) full-screen."""
        toggle_maximized_chart(self, self.query_one("#cmp-clean", LineChart), (TabbedContent.__name__, "curves"))

    def action_export(self) -> None:
        """The robust table as md, csv, tex and json under the runs folder's compare/."""
        table = robust_table(self._readable())
        if not table.models:
            self.notify("no evaluations to export yet", severity="warning")
            return
        self._export(table, self.app.runs_dir / EXPORT_FOLDER, export_stem(self.app.clock()))

    @work(thread=True, exit_on_error=False, group="compare-export")
    def _export(self, table, folder: Path, stem: str) -> None:
        try:
            paths = export_table(table, folder, stem)
        except WorkbenchError as exc:  # a full disk, a read-only folder: one line, the screen stays
            self.app.call_from_thread(self.notify, str(exc), severity="error", markup=False)
            return
        shown = f"{paths[0].with_suffix('')}.{{{','.join(p.suffix[1:] for p in paths)}}}"
        self.app.call_from_thread(self.notify, f"robust table saved: {shown}", markup=False)

    def action_back(self) -> None:
        self.app.pop_screen()


def _set_series(chart: LineChart, series: dict, marked=(), xlim: tuple[float, float] | None = None) -> None:
    """Replot only when the data changed: a status heartbeat alone must not rebuild the figure."""
    new = {name: (list(xs), list(ys)) for name, (xs, ys) in series.items()}
    # In order: a series' position is its colour.
    if list(new.items()) != list(chart.series.items()) or set(marked) != chart.marked or xlim != chart.xlim:
        chart.set_series(new, marked=marked, xlim=xlim)


def _get(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
