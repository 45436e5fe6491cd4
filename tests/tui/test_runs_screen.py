"""The Runs screen (home): listing, live refresh, marking, detail line, delete with confirmation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from textual.widgets import DataTable, Static

from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.confirm import ConfirmScreen
from workbench.tui.screens.runs import RunsScreen

from .fixed_runs import FAILED, FINISHED, FIXED_NOW, STOPPED
from .waiting import wait_until


def app_for(runs: Path) -> WorkbenchApp:
    return WorkbenchApp(runs, clock=lambda: FIXED_NOW)


async def test_lists_every_run_newest_first_with_state_and_accuracy(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        keys = [row.value for row in table.rows]
        assert [Path(k).name for k in keys] == [STOPPED, FAILED, FINISHED]
        finished = table.get_row(str(fixed_runs / FINISHED))
        assert "finished" in str(finished[2]) and finished[3] == "15/15" and finished[4] == "97.8%"
        assert "82.2%" == finished[5] and finished[6] == "digits/tiny/softmax"


async def test_failed_run_shows_its_error_line(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("down")  # stopped -> failed
        detail = str(app.screen.query_one("#run-detail", Static).render())
        assert "failed" in detail and "non-finite loss" in detail


async def test_new_run_folder_appears_without_restart(fixed_runs, tmp_path):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        table = app.screen.query_one(DataTable)
        assert table.row_count == 3
        copy = fixed_runs / "copy-20261123-080000"
        shutil.copytree(fixed_runs / FINISHED, copy)
        status = json.loads((copy / "status.json").read_text())
        (copy / "status.json").write_text(json.dumps({**status, "started": FIXED_NOW - 5}))
        await wait_until(pilot, lambda: table.row_count == 4, what="the new run listed")  # polled every second
        assert Path(table.coordinate_to_cell_key((0, 0)).row_key.value).name == copy.name


async def test_delete_asks_first_and_no_keeps_the_run(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert isinstance(app.screen, RunsScreen)
        assert (fixed_runs / STOPPED).is_dir()
        await pilot.press("d", "y")
        await wait_until(pilot, lambda: not (fixed_runs / STOPPED).exists(), what="the run folder deleted")
        assert (fixed_runs / FAILED).is_dir()


async def test_compare_needs_two_marked_runs(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("c")
        assert isinstance(app.screen, RunsScreen)  # refused with a notice
        await pilot.press("space")
        table = app.screen.query_one(DataTable)
        assert table.get_row_at(0)[0] == "●"
        await pilot.press("space")
        assert table.get_row_at(0)[0] == " "


async def test_stop_on_a_run_that_is_not_running_says_so(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("down", "down", "s")  # the finished run
        await pilot.pause()
        assert any("is not running (finished)" in str(n.message) for n in app._notifications)
        assert (fixed_runs / FINISHED / "status.json").read_text() == (
            Path(__file__).parent / "data" / "quickstart" / "status.json").read_text()


async def test_a_run_with_broken_files_is_listed_without_crashing(fixed_runs):
    broken = fixed_runs / "broken-20261123-090000"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "config.yaml").write_text("- a list, not a mapping\n")
    (broken / "status.json").write_text(json.dumps({"state": "running", "epoch": "x", "best_clean": "high",
                                                    "started": FIXED_NOW - 60, "pid": None}))
    (fixed_runs / "half-written").mkdir()  # a folder without config.yaml is not a run
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.screen.query_one(DataTable)
        assert table.row_count == 4
        row = table.get_row(str(broken))
        assert row[3] == "0/0" and row[4] == "-" and row[6] == "?/?/?"
