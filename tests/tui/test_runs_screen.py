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
        for _ in range(40):  # the watcher looks every second
            await pilot.pause(0.1)
            if table.row_count == 4:
                break
        assert table.row_count == 4
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
        for _ in range(30):
            await pilot.pause(0.05)
            if not (fixed_runs / STOPPED).exists():
                break
        assert not (fixed_runs / STOPPED).exists()
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


async def test_stop_then_resume_a_real_training_run(tmp_path, monkeypatch):
    import os
    import subprocess
    import sys

    from workbench.runs import Status, effective_state, stop_run

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = tmp_path / "runs"
    out = subprocess.run([sys.executable, "-m", "workbench", "train", "--profile", "quickstart", "--out", str(runs),
                          "--set", "epochs=300", "--detach"], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout
    run = Path(out.splitlines()[0].removeprefix("run: "))

    def state() -> str:
        return effective_state(Status.read(run / "status.json"))

    app = WorkbenchApp(runs)
    try:
        async with app.run_test(size=(120, 30)) as pilot:
            for _ in range(300):
                await pilot.pause(0.1)
                if state() == "running":
                    break
            assert state() == "running"
            await pilot.press("s")
            for _ in range(600):
                await pilot.pause(0.1)
                if state() == "stopped":
                    break
            assert state() == "stopped"
            stopped_at = Status.read(run / "status.json").step
            await pilot.press("r")
            for _ in range(600):
                await pilot.pause(0.1)
                status = Status.read(run / "status.json")
                if state() == "running" and status.step > stopped_at:
                    break
            assert state() == "running" and Status.read(run / "status.json").step > stopped_at
            table = app.screen.query_one(DataTable)
            for _ in range(30):  # the table follows within the watcher's period
                await pilot.pause(0.1)
                if "running" in str(table.get_row_at(0)[2]):
                    break
            assert "running" in str(table.get_row_at(0)[2])
    finally:
        if state() in ("running", "starting"):
            stop_run(run)
