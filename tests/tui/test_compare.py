"""Compare: overlaid curves of several runs, robust accuracy vs eps from their evaluations, config differences."""

from __future__ import annotations

import json
import time
from pathlib import Path

from textual.widgets import DataTable, Static

from workbench.tui.app import WorkbenchApp
from workbench.tui.model.compare import MISSING, config_diff, curves_from_report, flatten, short_names
from workbench.tui.screens.compare import CompareScreen
from workbench.tui.widgets.line_chart import LineChart

from .fixed_runs import DATA, FAILED, FINISHED, FIXED_NOW, STOPPED


def app_for(runs: Path) -> WorkbenchApp:
    return WorkbenchApp(runs, clock=lambda: FIXED_NOW)


async def wait_for(pilot, condition, timeout: float = 2.0) -> None:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "not within the time limit"
        await pilot.pause(0.05)


def loaded(app: WorkbenchApp) -> bool:
    screen = app.screen
    return isinstance(screen, CompareScreen) and screen.is_mounted and bool(screen.views)


def chart(app: WorkbenchApp, chart_id: str) -> LineChart:
    return app.screen.query_one(f"#{chart_id}", LineChart)


def edit_config(run: Path, old: str, new: str) -> None:
    text = (run / "config.yaml").read_text()
    assert old in text
    (run / "config.yaml").write_text(text.replace(old, new))


# -- the pure model ----------------------------------------------------------------------------

def test_config_diff_lists_dotted_keys_that_differ():
    a = {"name": "x", "optimizer": {"lr": 0.003, "betas": [0.9, 0.999]}, "epochs": 15, "provenance": {"git": "1"}}
    b = {"name": "x", "optimizer": {"lr": 0.001, "betas": [0.9, 0.999]}, "epochs": 15, "grad_clip": 1.0,
         "provenance": {"git": "2"}}
    assert flatten(a)["optimizer.betas"] == [0.9, 0.999]
    diff = dict(config_diff({"a": a, "b": b}))
    assert diff == {"optimizer.lr": [0.003, 0.001], "grad_clip": [MISSING, 1.0]}


def test_report_curves_worst_case_per_eps_and_per_attack_from_clean_at_zero():
    report = json.loads((DATA / "report.json").read_text())
    curves = curves_from_report(DATA / "report.json", report)
    assert curves.worst == {"custom": ([0.0, 0.05, 0.1], [0.985, 0.955, 0.835])}
    assert curves.attacks["FGSM"] == ([0.0, 0.05, 0.1], [0.985, 0.955, 0.84])
    assert curves.attacks["PGD"][1] == [0.985, 0.955, 0.835]


def test_legend_names_drop_the_time_stamp_only_while_they_stay_apart():
    assert short_names([FINISHED, STOPPED]) == ["quickstart", "ccn"]
    assert short_names(["a-20260101-000000", "a-20260102-000000"]) == ["a-20260101-000000", "a-20260102-000000"]


# -- the screen --------------------------------------------------------------------------------

async def test_overlays_one_series_per_run_and_lists_differing_keys(fixed_runs):
    edit_config(fixed_runs / STOPPED, "lr: 0.003", "lr: 0.001")
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        app.open_compare([fixed_runs / FINISHED, fixed_runs / STOPPED])
        await wait_for(pilot, lambda: loaded(app))
        for chart_id in ("cmp-clean", "cmp-loss"):
            assert list(chart(app, chart_id).series) == ["quickstart", "ccn"]
        assert len(chart(app, "cmp-clean").series["quickstart"][0]) == 15
        assert len(chart(app, "cmp-clean").series["ccn"][0]) == 6
        # Only the finished run has an evaluation: its worst case, starting at clean accuracy (eps 0).
        assert chart(app, "cmp-eps").series == {"quickstart": ([0.0, 0.05, 0.1], [0.985, 0.955, 0.835])}
        notes = str(app.screen.query_one("#compare-notes", Static).render())
        assert "no evaluation" in notes and STOPPED in notes

        table = app.screen.query_one(DataTable)
        keys = [row.value for row in table.rows]
        assert "optimizer.lr" in keys and "name" in keys
        assert "epochs" not in [k for k in keys if not k.startswith("summary:")]  # same in both: not a difference
        assert [str(c) for c in table.get_row("optimizer.lr")[1:]] == ["0.003", "0.001"]
        assert [str(c) for c in table.get_row("summary:defense")[1:]] == ["softmax", "ccn"]
        assert [str(c) for c in table.get_row("summary:best robust")[1:]] == ["82.2% (ep 15)", "72.7% (ep 5)"]

        await pilot.press("e")  # robust accuracy vs eps per attack
        assert set(chart(app, "cmp-eps").series) == {"quickstart FGSM", "quickstart PGD"}
        await pilot.press("2")
        assert app.screen.query_one("#compare-table").display
        await pilot.press("escape")
        assert not isinstance(app.screen, CompareScreen)


async def test_a_run_that_changes_is_read_again(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        app.open_compare([fixed_runs / FAILED, fixed_runs / STOPPED])
        await wait_for(pilot, lambda: loaded(app))
        assert len(chart(app, "cmp-loss").series["pcl"][0]) == 3
        record = json.loads((fixed_runs / FINISHED / "metrics.jsonl").read_text().splitlines()[11])
        assert record["kind"] == "epoch" and record["epoch"] == 4
        with open(fixed_runs / FAILED / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        await wait_for(pilot, lambda: len(chart(app, "cmp-loss").series["pcl"][0]) == 4, timeout=3.0)


async def test_a_folder_that_is_not_a_run_gets_a_note_not_a_traceback(fixed_runs):
    (fixed_runs / "junk").mkdir()
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_compare([fixed_runs / FINISHED, fixed_runs / "junk", fixed_runs / "missing"])
        await wait_for(pilot, lambda: loaded(app))
        notes = str(app.screen.query_one("#compare-notes", Static).render())
        assert "junk: not a run folder" in notes and "missing: no such folder" in notes
        assert "two or more" in notes
        assert list(chart(app, "cmp-clean").series) == ["quickstart"]


def test_every_binding_is_described():
    assert all(b.description for b in CompareScreen.BINDINGS)


def test_compare_snapshot(fixed_runs, snap_compare):
    async def open_it(pilot):
        pilot.app.open_compare([fixed_runs / FINISHED, fixed_runs / STOPPED])
        await wait_for(pilot, lambda: loaded(pilot.app))
        await pilot.pause(0.2)

    assert snap_compare(app_for(fixed_runs), terminal_size=(100, 32), run_before=open_it)
