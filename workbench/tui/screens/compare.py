"""Compare: two or more runs overlaid (training curves, robust accuracy vs eps) and their config differences.

Run folders only (a checkpoint's run is its folder). A thread worker reads the runs, and reads
them again when their files change, so a run still training keeps its curves current.
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

from ..model.compare import RunView, config_diff, load_run, short_names, show_value, signature
from ..model.format import pct, state_markup
from ..widgets.line_chart import LineChart

# Shown as their own rows at the top of the table, so not repeated among the differences.
SUMMARY_KEYS = ("dataset", "model.name", "defense.name")
RECHECK_SECONDS = 1.0


@dataclass
class RunsLoaded(Message):
    views: list[RunView]


def _best(view: RunView, kind: str) -> str:
    best = view.best(kind)
    if best is None:
        return "-"
    return pct(best.value) + (f" (ep {best.epoch})" if best.epoch else "")


class CompareScreen(Screen):
    BINDINGS = [
        Binding("e", "toggle_attacks", "Worst case / per attack"),
        Binding("1", "tab('curves')", "Curves tab", show=False),
        Binding("2", "tab('diff')", "Differences tab", show=False),
        Binding("escape", "back", "Back"),
    ]

    DEFAULT_CSS = """
    CompareScreen #compare-notes { padding: 0 1; height: auto; max-height: 4; color: $text-muted; }
    CompareScreen TabbedContent { height: 1fr; }
    CompareScreen TabPane { padding: 0; height: 1fr; }
    CompareScreen #compare-charts { grid-size: 2 2; grid-rows: 1fr 1fr; grid-columns: 1fr 1fr; height: 1fr; }
    CompareScreen #compare-table { height: 1fr; }
    """

    def __init__(self, run_paths: list[Path]) -> None:
        super().__init__()
        self.run_paths = [Path(p) for p in run_paths]
        self.views: list[RunView] = []
        self.per_attack = False
        self._diff_count = 0
        self.sub_title = "compare " + ", ".join(p.name for p in self.run_paths)

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("loading…", id="compare-notes", markup=False)
        with TabbedContent(initial="curves"):
            with TabPane("1 Curves", id="curves"):
                with Grid(id="compare-charts"):
                    yield LineChart("clean accuracy per epoch", "epoch", ylim=(0.0, 1.0), id="cmp-clean")
                    yield LineChart("robust accuracy per epoch", "epoch", ylim=(0.0, 1.0), id="cmp-robust")
                    yield LineChart("train loss per epoch", "epoch", id="cmp-loss")
                    yield LineChart("robust accuracy vs eps (latest evaluation)", "eps", ylim=(0.0, 1.0),
                                    id="cmp-eps")
            with TabPane("2 Differences", id="diff"):
                yield DataTable(id="compare-table", zebra_stripes=True, cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        if len(self.run_paths) < 2:
            self.notify("compare needs two or more runs", severity="warning")
        self.follow()

    @work(thread=True, exclusive=True, exit_on_error=False, group="compare-load")
    def follow(self) -> None:
        worker = get_current_worker()
        seen: list[tuple] | None = None
        while not worker.is_cancelled:
            current = [signature(p) for p in self.run_paths]
            if current != seen:
                seen = current
                self.post_message(RunsLoaded([load_run(p) for p in self.run_paths]))
            if worker.cancelled_event.wait(max(RECHECK_SECONDS, self.app.poll_seconds)):
                break

    def on_runs_loaded(self, message: RunsLoaded) -> None:
        self.views = message.views
        self._show_charts()
        self._show_table()
        self._show_notes()

    # -- drawing -------------------------------------------------------------------------------
    def _readable(self) -> list[RunView]:
        return [v for v in self.views if not v.error]

    def _show_charts(self) -> None:
        views = self._readable()
        names = short_names([v.name for v in views])
        for chart_id, key in (("#cmp-clean", "test_clean_acc"), ("#cmp-robust", "test_robust_acc"),
                              ("#cmp-loss", "train_loss")):
            self.query_one(chart_id, LineChart).set_series({n: v.history.epoch_series(key) for n, v in zip(names, views)})
        series = {}
        for name, v in zip(names, views):
            if v.evals is None:
                continue
            curves = v.evals.attacks if self.per_attack else v.evals.worst
            for label, xy in curves.items():
                series[name if len(curves) == 1 and not self.per_attack else f"{name} {label}"] = xy
        eps_chart = self.query_one("#cmp-eps", LineChart)
        eps_chart.set_series(series)

    def _show_table(self) -> None:
        table = self.query_one("#compare-table", DataTable)
        table.clear(columns=True)
        views = self._readable()
        table.add_column("", key="key")
        for i, v in enumerate(views):
            table.add_column(v.name, key=f"run{i}")
        flat = [(key, values) for key, values in config_diff({str(i): v.config for i, v in enumerate(views)})
                if key not in SUMMARY_KEYS]
        summary = [
            ("state", [state_markup(v.state) for v in views]),
            ("dataset", [str(v.config.get("dataset", "?")) for v in views]),
            ("model", [show_value(_get(v.config, "model.name")) for v in views]),
            ("defense", [show_value(_get(v.config, "defense.name")) for v in views]),
            ("epochs", [f"{v.status.epoch if v.status else len(v.history.epochs)}/{v.config.get('epochs', '?')}"
                        for v in views]),
            ("best clean", [_best(v, "clean") for v in views]),
            ("best robust", [_best(v, "robust") for v in views]),
            ("evaluation", [Text(v.evals.report.name) if v.evals else "none" for v in views]),
        ]
        for key, cells in summary:
            table.add_row(Text(key, style="bold"), *cells, key=f"summary:{key}")
        for key, values in flat:
            # Text, not str: a str cell is read as markup, and YAML lists look like tags.
            table.add_row(Text(key), *[Text(show_value(x)) for x in values], key=key)
        self._diff_count = len(flat)

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

    def action_back(self) -> None:
        self.app.pop_screen()


def _get(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
