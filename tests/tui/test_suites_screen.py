"""The Suites screen: the suites under the runs folder, a suite's model x seed grid of cells (live), Enter to a
cell's run in the monitor, the suite's table and chart; and the pure model under it.

One real suite per session, made by the real `workbench suite run` (2 models x 2 seeds, 2 epochs of digits,
FGSM on 50 samples: ~15 s); each test works on its own copy. Snapshots pin names and numbers first (see `pin`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from rich.text import Text
from textual.widgets import DataTable, Static

from workbench.suites.layout import SuitePaths
from workbench.tui.app import WorkbenchApp
from workbench.tui.model.suites import GridCell, load_grid, pick_budget, read_suite, suite_rows
from workbench.tui.screens.help import HelpScreen
from workbench.tui.screens.monitor import MonitorScreen
from workbench.tui.screens.runs import RunsScreen
from workbench.tui.screens.suites import SuitesScreen

from .fixed_runs import FIXED_NOW
from .waiting import wait_until, wait_until_settled

SUITE_YAML = """\
name: tiny
description: two tiny CNNs x two seeds, FGSM only (TUI tests)
seeds: [0, 1]
models:
  - name: plain
    profile: quickstart
    set: {adv_train.attack: none}
  - name: narrow
    profile: quickstart
    set: {adv_train.attack: none, model.options.width: 8}
budgets:
  quick:
    epochs: 2
    n: 50
    set: {eval.robust_every: 0}
evaluations:
  - name: fgsm
    attacks: [fgsm]
    eps: [0.1, 0.2]
"""
MODELS = ("plain", "narrow")


@pytest.fixture(scope="session")
def suite_source(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("suite")
    (base / "tiny.yaml").write_text(SUITE_YAML)
    done = subprocess.run([sys.executable, "-m", "workbench", "suite", "run", "tiny.yaml", "--runs", "runs",
                           "--jobs", "2", "--device", "cpu"], cwd=base, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return base / "runs" / "suites" / "tiny"


@pytest.fixture
def suite_runs(suite_source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the session's suite, as the relative runs folder `runs` (the test runs inside tmp_path)."""
    shutil.copytree(suite_source, tmp_path / "runs" / "suites" / "tiny")
    monkeypatch.chdir(tmp_path)
    return Path("runs")


def app_for(runs: Path) -> WorkbenchApp:
    return WorkbenchApp(runs, clock=lambda: FIXED_NOW)


# -- reading and editing the suite's files -------------------------------------------------------

def suite_dir(runs: Path) -> Path:
    return runs / "suites" / "tiny"


def cell_dirs(runs: Path) -> dict[tuple[str, int], Path]:
    """(model, seed) -> cell folder."""
    out = {}
    for cell in (suite_dir(runs) / "cells").iterdir():
        plan = json.loads((cell / "cell.json").read_text())
        out[(plan["model"], plan["seed"])] = cell
    return out


def run_dir(cell: Path) -> Path:
    return next(p for p in cell.iterdir() if (p / "config.yaml").is_file())


def reports(runs: Path, model: str) -> list[dict]:
    """The saved evaluation reports of a model's cells, one per seed."""
    cells = cell_dirs(runs)
    return [json.loads(next((run_dir(cells[(model, s)]) / "evals").glob("*.json")).read_text()) for s in (0, 1)]


def update_json(path: Path, **fields) -> None:
    data = json.loads(path.read_text())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**data, **fields}))
    os.replace(tmp, path)  # as the writers do: a reader never sees half a file


def drop_evaluations(cell: Path) -> None:
    for report in (run_dir(cell) / "evals").glob("*.json"):
        report.unlink()


def grid_text(app: WorkbenchApp, model: str, seed: int) -> str:
    return str(app.screen.query_one("#suite-grid", DataTable).get_cell(model, str(seed)))


def laid_out(table: DataTable) -> bool:
    """The table has measured its rows (on idle, after they were added): its columns fit their cells."""
    return table.row_count > 0 and table.virtual_size.height == table.row_count + 1


async def open_suites(pilot) -> SuitesScreen:
    await pilot.press("S")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, SuitesScreen), what="the suites screen")
    return pilot.app.screen


# -- the pure model -------------------------------------------------------------------------------

def test_rows_and_grid_from_the_suite_files(suite_runs):
    [row] = suite_rows(suite_runs)
    assert (row.name, row.budgets, row.total, row.done, row.failed, row.active) == ("tiny", ("quick",), 4, 4, 0, 0)
    assert row.description.startswith("two tiny CNNs")
    paths = SuitePaths.under(suite_runs, "tiny")
    grid = load_grid(paths)
    assert (grid.budget, grid.models, grid.seeds) == ("quick", MODELS, (0, 1))  # the suite file's order
    status = json.loads((run_dir(cell_dirs(suite_runs)[("narrow", 1)]) / "status.json").read_text())
    cell = grid.cell("narrow", 1)
    assert (cell.state, cell.epoch, cell.epochs, cell.evaluations_done) == ("done", 2, 2, 1)
    assert cell.text() == f"done 2/2 {100 * status['last_clean']:.1f}%"
    assert load_grid(paths, "no-such-budget").budget == "quick"
    assert pick_budget(read_suite(paths), []) is None


def test_cell_text_and_detail():
    cell = GridCell("CCN", 3, "CCN-s3-x", "training", 4, 10, 0.912, 0.5, 0, 2, "", "runs/x")
    assert cell.text() == "training 4/10 91.2% r50.0%"
    assert "robust while training 50.0%" in cell.detail() and "run runs/x" in cell.detail()
    failed = GridCell("CCN", 3, "CCN-s3-x", "failed", message="non-finite loss", log="cells/x/cell.log")
    assert failed.text() == "failed 0/? -" and "non-finite loss" in failed.detail() and "log cells/x" in failed.detail()


TABLE_WITHOUT_TORCH = """
import sys
from pathlib import Path
from workbench.suites.layout import SuitePaths
from workbench.tui.model.suites import table_view
view = table_view(SuitePaths.under(Path(sys.argv[1]), "tiny"), "quick")
print("rows", len(view.rows), "torch", "torch" in sys.modules)
"""


def test_the_table_is_read_without_torch(suite_runs):
    # Its own interpreter: pytest itself has imported torch.
    out = subprocess.run([sys.executable, "-c", TABLE_WITHOUT_TORCH, str(suite_runs)], capture_output=True,
                         text=True, check=True, timeout=120).stdout
    assert "torch False" in out and "rows 0" not in out


# -- the screen -----------------------------------------------------------------------------------

async def test_S_on_the_runs_screen_lists_the_suite(suite_runs):
    app = app_for(suite_runs)
    async with app.run_test(size=(100, 30)) as pilot:
        assert isinstance(app.screen, RunsScreen)
        screen = await open_suites(pilot)
        row = screen.query_one("#suites-list", DataTable).get_row("tiny")
        assert [str(c) for c in row] == ["tiny", "quick", "4/4", "0", "0"]
        assert "budget quick" in str(screen.query_one("#suite-title", Static).render())
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_grid_shows_each_cells_state_and_epoch(suite_runs):
    app = app_for(suite_runs)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_suites(pilot)
        grid = app.screen.query_one("#suite-grid", DataTable)
        assert [str(c.label) for c in grid.columns.values()] == ["seed 0", "seed 1"]
        assert [str(r.label) for r in grid.rows.values()] == list(MODELS)
        for (model, seed), cell in cell_dirs(suite_runs).items():
            clean = json.loads((run_dir(cell) / "status.json").read_text())["last_clean"]
            assert grid_text(app, model, seed) == f"done 2/2 {100 * clean:.1f}%"
        cursor = grid.get_cell_at(grid.cursor_coordinate)
        assert isinstance(cursor, Text) and cursor.spans[0].style == "cyan"  # the state in its colour
        detail = str(app.screen.query_one("#cell-detail", Static).render())
        assert "plain seed 0 · done · epoch 2/2" in detail and "evaluations 1/1" in detail


async def test_grid_follows_a_cell_while_it_trains_then_fails(suite_runs):
    cell = cell_dirs(suite_runs)[("plain", 1)]
    app = app_for(suite_runs)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_suites(pilot)
        assert grid_text(app, "plain", 1).startswith("done")
        # What a cell worker does: its job is running, its trainer (this process: alive) has done epoch 1.
        drop_evaluations(cell)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        update_json(cell / "job.json", state="running", ended=None, **me)
        update_json(run_dir(cell) / "status.json", state="running", epoch=1, **me)
        await wait_until(pilot, lambda: grid_text(app, "plain", 1).startswith("training 1/2"), what="training 1/2")
        update_json(cell / "job.json", state="failed", message="non-finite loss at epoch 2")
        update_json(run_dir(cell) / "status.json", state="failed")
        await wait_until(pilot, lambda: grid_text(app, "plain", 1).startswith("failed 1/2"), what="failed")
        grid = app.screen.query_one("#suite-grid", DataTable)
        assert grid.get_cell("plain", "1").spans[0].style == "bold red"
        await pilot.press("right")  # plain, seed 1
        detail = str(app.screen.query_one("#cell-detail", Static).render())
        assert "non-finite loss at epoch 2" in detail and "cell.log" in detail
        await wait_until(pilot, lambda: str(app.screen.query_one("#suites-list", DataTable).get_row("tiny")[3]) == "1",
                         what="the failed count in the list")


async def test_several_suites_pick_one_in_the_list(suite_runs):
    other = suite_runs / "suites" / "tiny2"
    shutil.copytree(suite_dir(suite_runs), other)
    drop_evaluations(next((other / "cells").glob("narrow-s0-*")))  # trained, not evaluated: stopped
    app = app_for(suite_runs)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_suites(pilot)
        listing = screen.query_one("#suites-list", DataTable)
        assert screen.focused is listing and [r.value for r in listing.rows] == ["tiny", "tiny2"]
        assert str(listing.get_row("tiny2")[2]) == "3/4"
        await pilot.press("down")
        await wait_until(pilot, lambda: screen.grid.suite == "tiny2", what="the second suite's grid")
        assert grid_text(app, "narrow", 0).startswith("stopped 2/2")
        await pilot.press("enter")  # into the grid
        assert screen.focused is screen.query_one("#suite-grid")
        await pilot.press("down")
        assert "trained; 0/1 evaluations saved" in str(screen.query_one("#cell-detail", Static).render())


async def test_enter_opens_the_monitor_of_the_cells_run(suite_runs):
    app = app_for(suite_runs)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_suites(pilot)
        await pilot.press("down", "right", "enter")  # narrow, seed 1
        assert isinstance(app.screen, MonitorScreen)
        assert app.screen.run.root.resolve() == run_dir(cell_dirs(suite_runs)[("narrow", 1)]).resolve()
        await pilot.press("escape")
        assert isinstance(app.screen, SuitesScreen)


async def test_enter_on_a_cell_without_a_run_says_so(suite_runs):
    shutil.rmtree(run_dir(cell_dirs(suite_runs)[("plain", 0)]))
    app = app_for(suite_runs)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_suites(pilot)
        assert grid_text(app, "plain", 0).startswith("pending 0/2")
        await pilot.press("enter")
        assert isinstance(app.screen, SuitesScreen)  # refused with a notice


async def test_table_shows_the_models_and_the_reports_numbers(suite_runs):
    app = app_for(suite_runs)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_suites(pilot)
        await pilot.press("t")
        await wait_until(pilot, lambda: screen.table is not None, timeout=30, what="the suite's table")
        table = screen.query_one("#suite-table", DataTable)
        assert [str(c.label) for c in table.columns.values()] == ["accuracy %", *MODELS]
        for i, model in enumerate(MODELS, start=1):
            clean = statistics.fmean(r["clean_accuracy"] for r in reports(suite_runs, model))
            fgsm = statistics.fmean(next(x["robust_accuracy"] for x in r["results"] if x["value"] == 0.1)
                                    for r in reports(suite_runs, model))
            assert str(table.get_row("clean")[i]).startswith(f"{100 * clean:.1f} ± ")
            assert str(table.get_row("FGSM@0.1")[i]).startswith(f"{100 * fgsm:.1f} ± ")
            xs, ys = screen.query_one("#suite-chart").series[model]
            assert xs == [0.1, 0.2] and ys[0] == pytest.approx(fgsm)
        assert not screen.query_one("#suites-list").display  # the table tab takes the list's rows
        await pilot.press("t")
        assert screen.query_one("#suites-list").display and screen.focused.id == "suite-grid"


async def test_an_evaluation_that_lands_keeps_the_cursor_and_widens_its_column(suite_runs):
    """A model's first report appears while the table is shown: its column grows to fit the new numbers
    (one seed: the value and its Wilson interval), and the cursor stays on the row it was on."""
    cells = cell_dirs(suite_runs)
    evals = run_dir(cells[("narrow", 0)]) / "evals"
    landing = {p.name: p.read_text() for p in evals.glob("*.json")}
    drop_evaluations(cells[("narrow", 0)])
    drop_evaluations(cells[("narrow", 1)])
    app = app_for(suite_runs)
    async with app.run_test(size=(120, 36)) as pilot:
        screen = await open_suites(pilot)
        await pilot.press("t")
        table = screen.query_one("#suite-table", DataTable)
        await wait_until(pilot, lambda: laid_out(table), timeout=30, what="the suite's table")
        await pilot.press("down", "down")
        for name, text in landing.items():
            (evals / name).write_text(text)
        column = lambda: next((c for c in table.columns.values() if str(c.label) == "narrow"), None)  # noqa: E731
        await wait_until(pilot, lambda: column() is not None and "[" in str(table.get_row("clean")[2]),
                         timeout=30, what="narrow's first evaluation in the table")
        assert table.cursor_row == 2
        widest = max(table.get_row(key)[2].cell_len for key in table.rows)
        assert column().get_render_width(table) - 2 * table.cell_padding >= widest


async def test_b_switches_between_the_budgets_run(suite_runs):
    budgets = suite_dir(suite_runs) / "budgets.json"
    quick = json.loads(budgets.read_text())["quick"]
    # A second budget planned over the plain model's cells (as `suite run --budget smoke --models plain`).
    budgets.write_text(json.dumps({"quick": quick, "smoke": [k for k in quick if k.startswith("plain-")]}))
    app = app_for(suite_runs)
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_suites(pilot)
        assert "(1 of 2: b for the next)" in str(screen.query_one("#suite-title", Static).render())
        await pilot.press("b")
        await wait_until(pilot, lambda: screen.grid is not None and screen.grid.budget == "smoke", what="smoke")
        assert [str(r.label) for r in screen.query_one("#suite-grid", DataTable).rows.values()] == ["plain"]
        await pilot.press("b")
        await wait_until(pilot, lambda: screen.grid.budget == "quick", what="back to quick")


async def test_no_suites_says_how_to_make_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = app_for(Path("runs"))
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_suites(pilot)
        text = str(screen.query_one("#suites-empty", Static).render())
        assert "No suites under runs/suites" in text and "workbench suite run quickstart" in text
        assert not screen.query_one("#suites-list").display
        await pilot.press("t", "b", "enter")  # nothing to show: no crash
        assert isinstance(app.screen, SuitesScreen)


async def test_the_key_is_in_the_runs_screens_help(suite_runs):
    app = app_for(suite_runs)
    async with app.run_test(size=(100, 40)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "Suites" in str(app.screen.query_one("#help-text", Static).render())


# -- snapshots ------------------------------------------------------------------------------------

def pin(runs: Path) -> None:
    """Fixed names and numbers for a snapshot: a cell folder is named by a config hash and a run folder by the
    time it started, and accuracies can differ in the last digit between machines. The files stay as the
    real run wrote them otherwise."""
    suite = suite_dir(runs)
    keys = {}
    for (model, seed), cell in cell_dirs(runs).items():
        level = 0.9 - 0.1 * MODELS.index(model) + 0.02 * seed
        keys[cell.name] = f"{model}-s{seed}"
        update_json(cell / "cell.json", key=keys[cell.name])
        run = run_dir(cell).rename(cell / f"{model}-20261123-0{seed}0000")
        update_json(run / "status.json", last_clean=level, best_clean=level)
        for path in (run / "evals").glob("*.json"):
            report = json.loads(path.read_text())
            for r in report["results"] + report["worst_case"]:
                r["robust_accuracy"] = round(level * (1 - 3 * r["eps"]), 2)
                r.pop("ci95", None)
            update_json(path, clean_accuracy=level, results=report["results"], worst_case=report["worst_case"])
        cell.rename(cell.with_name(keys[cell.name]))
    budgets = json.loads((suite / "budgets.json").read_text())
    (suite / "budgets.json").write_text(json.dumps({b: [keys[k] for k in ks] for b, ks in budgets.items()}))


async def _show_grid(pilot):
    screen = await open_suites(pilot)
    await wait_until(pilot, lambda: laid_out(screen.query_one("#suite-grid", DataTable)), what="the grid")
    await wait_until_settled(pilot)


async def _show_table(pilot):
    screen = await open_suites(pilot)
    await pilot.press("t")
    await wait_until(pilot, lambda: laid_out(screen.query_one("#suite-table", DataTable)), timeout=30,
                     what="the suite's table")
    await wait_until_settled(pilot)


@pytest.mark.parametrize("view", [_show_grid, _show_table], ids=["cells", "table"])
@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_suites_screen_snapshot(suite_runs, snap_compare, size, view):
    pin(suite_runs)
    assert snap_compare(app_for(suite_runs), terminal_size=size, run_before=view)


async def test_m_maximises_the_suite_chart_and_m_brings_it_back(suite_runs):
    async with app_for(suite_runs).run_test(size=(80, 24)) as pilot:
        screen = await open_suites(pilot)
        await wait_until(pilot, lambda: laid_out(screen.query_one("#suite-grid", DataTable)), what="the grid")
        await pilot.press("m")  # from the cells tab: the table tab comes in front with its chart full-screen
        chart = screen.query_one("#suite-chart")
        await wait_until(pilot, lambda: chart.series, timeout=30, what="the chart's series")
        assert screen.maximized is chart
        await pilot.pause(0.2)
        assert chart.size.width == 80 and chart.size.height > 15
        await pilot.press("m")
        assert screen.maximized is None
        await pilot.press("escape")
        assert not isinstance(pilot.app.screen, SuitesScreen)
