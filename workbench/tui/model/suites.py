"""Experiment suites as the Suites screen shows them: one row per suite, a model x seed grid of cells, and the
suite's table and chart. Pure (no Textual); reads the files through `workbench.suites`.

The table (`load_table`) imports `workbench.suites.table` on first use, not at import time: the screen
module must stay light, and the table is only read when it is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ...suites.layout import CellPaths, SuitePaths, find_suites
from ...suites.state import CellState, cell_state
from .format import pct

if TYPE_CHECKING:
    from ...suites.spec import Suite
    from ...suites.table import SuiteTable

# The colour of each cell state (the rest of a cell's text stays plain).
STATE_STYLES = {
    "pending": "dim", "queued": "blue", "training": "bold green", "evaluating": "bold magenta",
    "done": "cyan", "stopped": "yellow", "failed": "bold red",
}
ACTIVE = ("queued", "training", "evaluating")


@dataclass(frozen=True)
class SuiteRow:
    """One suite of the list: its budgets and how many of their cells are done, failed or busy."""

    name: str
    root: Path
    budgets: tuple[str, ...]
    total: int
    done: int
    failed: int
    active: int
    description: str = ""


@dataclass(frozen=True)
class GridCell:
    model: str
    seed: int
    key: str
    state: str
    epoch: int = 0
    epochs: int = 0
    clean: float | None = None
    robust: float | None = None
    evaluations_done: int = 0
    evaluations: int = 0
    message: str = ""
    run: str | None = None
    log: str = ""

    @classmethod
    def of(cls, cell: CellPaths, st: CellState | None) -> "GridCell":
        if st is None:  # listed in budgets.json, but its cell.json is missing or unreadable
            return cls("?", -1, cell.root.name, "pending", message="no cell.json yet", log=str(cell.log))
        return cls(st.model, st.seed, st.key, st.state, st.epoch, st.epochs, st.clean, st.robust,
                   st.evaluations_done, st.evaluations, st.message, st.run, str(cell.log))

    def text(self) -> str:
        """'done 6/6 95.3%': state, epochs, last clean accuracy; ' r80.1%' when training measured robustness."""
        text = f"{self.state} {self.epoch}/{self.epochs or '?'} {pct(self.clean)}"
        return text + (f" r{pct(self.robust)}" if self.robust is not None else "")

    def detail(self) -> str:
        """A line or two on the cell under the cursor."""
        parts = [f"{self.model} seed {self.seed}", self.state, f"epoch {self.epoch}/{self.epochs or '?'}",
                 f"clean {pct(self.clean)}"]
        if self.robust is not None:
            parts.append(f"robust while training {pct(self.robust)}")
        parts.append(f"evaluations {self.evaluations_done}/{self.evaluations}")
        if self.message:
            parts.append(self.message)
        parts.append(f"run {self.run}" if self.run else "no run folder yet")
        if self.state == "failed":
            parts.append(f"log {self.log}")
        return " · ".join(parts)


@dataclass(frozen=True)
class SuiteGrid:
    """The cells of one suite and budget, models down and seeds across."""

    suite: str
    budget: str
    budgets: tuple[str, ...]
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    cells: dict[tuple[str, int], GridCell] = field(default_factory=dict)

    def cell(self, model: str, seed: int) -> GridCell | None:
        return self.cells.get((model, seed))

    def signature(self) -> tuple:
        """What the table depends on: which cells have which evaluations saved."""
        return (self.suite, self.budget, tuple((c.key, c.state, c.evaluations_done) for c in self.cells.values()))


def read_suite(paths: SuitePaths) -> "Suite | None":
    """The suite file a `suite run` left beside its cells (a `Suite`), or None when it is missing or invalid."""
    from ...config.yamlio import read_yaml
    from ...errors import WorkbenchError
    from ...suites.spec import parse_suite

    try:
        return parse_suite(read_yaml(paths.suite_file), str(paths.suite_file))
    except (WorkbenchError, OSError, ValueError):
        return None


def pick_budget(suite: "Suite | None", budgets: list[str], wanted: str | None = None) -> str | None:
    """The budget to show: the one asked for if it was run, else the suite's default, else the first run."""
    if wanted in budgets:
        return wanted
    default = (suite.default_budget or next(iter(suite.budgets), None)) if suite is not None else None
    return default if default in budgets else (budgets[0] if budgets else None)


def suite_row(paths: SuitePaths) -> SuiteRow:
    budgets = paths.read_budgets()
    keys = list(dict.fromkeys(k for cells in budgets.values() for k in cells))  # a cell shared by budgets once
    states = [cell_state(paths.cell(k)) for k in keys]
    count = lambda *wanted: sum(1 for s in states if s is not None and s.state in wanted)  # noqa: E731
    suite = read_suite(paths)
    return SuiteRow(paths.root.name, paths.root, tuple(budgets), len(keys), count("done"), count("failed"),
                    count(*ACTIVE), suite.description if suite is not None else "")


def suite_rows(runs_dir: Path) -> list[SuiteRow]:
    return [suite_row(p) for p in find_suites(runs_dir)]


def load_grid(paths: SuitePaths, budget: str | None = None) -> SuiteGrid | None:
    """The grid of `budget` (None: the default one); None when the suite has no budget run."""
    budgets = paths.read_budgets()
    suite = read_suite(paths)
    name = pick_budget(suite, list(budgets), budget)
    if name is None:
        return None
    cells = [GridCell.of(c, cell_state(c, name)) for c in paths.cells_of(name)]
    # The suite file's order first (as the suite lists them), then anything only the cells know.
    models = [m.name for m in suite.models] if suite is not None else []
    seeds = list(suite.seeds) if suite is not None else []
    models += [c.model for c in cells if c.model not in models]
    seeds += sorted({c.seed for c in cells} - set(seeds))
    present = {c.model for c in cells}
    return SuiteGrid(paths.root.name, name, tuple(budgets), tuple(m for m in models if m in present),
                     tuple(s for s in seeds if any(c.seed == s for c in cells)),
                     {(c.model, c.seed): c for c in cells})


@dataclass(frozen=True)
class TableView:
    """The suite's table turned for a terminal: one row per metric, one column per model (and its paper
    number where the suite gives one), the chart's series (robust accuracy as a fraction vs eps, worst case,
    seed mean), and the notes on collapsed and missing cells."""

    suite: str
    budget: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    series: dict[str, tuple[list[float], list[float]]]
    notes: tuple[str, ...]


def table_view(paths: SuitePaths, budget: str) -> TableView:
    """The table of `budget` as `workbench suite table` builds it (empty, saying why, without a suite file)."""
    from ...suites.chart import chart_series
    from ...suites.render import cell_text, notes, paper_text
    from ...suites.table import build_table

    suite = read_suite(paths)
    if suite is None:
        return TableView(paths.root.name, budget, ("accuracy %",), (), {}, (f"cannot read {paths.suite_file}",))
    table = build_table(suite, paths, budget)
    papers = [model for model in table.models if _has_paper(table, model)]
    columns = ["accuracy %"]
    for model in table.models:
        columns += [model, f"{model} paper"] if model in papers else [model]
    rows = []
    for metric in table.metrics:
        row = [metric.name]
        for model in table.models:
            row.append(cell_text(table.cell(model, metric.name)))
            if model in papers:
                row.append(paper_text(table.cell(model, metric.name)))
        rows.append(tuple(row))
    # Fractions, as every chart of the TUI draws accuracy (its percent ticks are of 0..1).
    series = {model: ([x for x, _ in pts], [y / 100 for _, y in pts]) for model, pts in chart_series(table).items()}
    # The first note is the legend of `suite table`; the screen has its own short one.
    return TableView(table.suite, budget, tuple(columns), tuple(rows), series, tuple(notes(table)[1:]))


def _has_paper(table: "SuiteTable", model: str) -> bool:
    return any((c := table.cell(model, m.name)) is not None and c.paper is not None for m in table.metrics)
