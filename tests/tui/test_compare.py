"""Compare: overlaid curves of several runs, robust accuracy vs eps from their evaluations, config differences,
the robust accuracy table per attack × eps (with its export), and snapshots at 80×24 and 120×36."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from textual.widgets import DataTable, Static

from workbench.compare.table import build_compare_table
from workbench.stats import wilson_interval
from workbench.suites.render import render
from workbench.tui.app import WorkbenchApp
from workbench.tui.model.compare import (MISSING, RunFollower, config_diff, curves_from_report, epoch_span,
                                         export_stem, flatten, robust_rows, robust_table, short_names)
from workbench.tui.screens.compare import CompareScreen
from workbench.tui.widgets.line_chart import LineChart

from .fixed_runs import DATA, FAILED, FINISHED, FIXED_NOW, STOPPED
from .waiting import wait_until, wait_until_settled


def app_for(runs: Path) -> WorkbenchApp:
    return WorkbenchApp(runs, clock=lambda: FIXED_NOW)


def loaded(app: WorkbenchApp) -> bool:
    screen = app.screen
    return isinstance(screen, CompareScreen) and screen.is_mounted and bool(screen.views)


def chart(app: WorkbenchApp, chart_id: str) -> LineChart:
    return app.screen.query_one(f"#{chart_id}", LineChart)


def edit_config(run: Path, old: str, new: str) -> None:
    text = (run / "config.yaml").read_text()
    assert old in text
    (run / "config.yaml").write_text(text.replace(old, new))


def replace_file(path: Path, text: str) -> None:
    """What the trainer does to status.json, and a resume to metrics.jsonl: an atomic replace."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def set_status(run: Path, **fields) -> None:
    data = json.loads((run / "status.json").read_text())
    replace_file(run / "status.json", json.dumps({**data, **fields}))


def epoch_record(epoch: int) -> dict:
    records = [json.loads(x) for x in (DATA / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r["kind"] == "epoch" and r["epoch"] == epoch)


def cell(app: WorkbenchApp, row: str, column: int) -> str:
    return str(app.screen.query_one("#compare-table", DataTable).get_row(row)[column])


def evaluate(run: Path, scale: float) -> None:
    """Save a report on `run`'s last.pt: the fixed one's, robust accuracies scaled, Wilson intervals anew."""
    report = json.loads((DATA / "report.json").read_text())
    report["checkpoint"] = str(run / "checkpoints" / "last.pt")
    for entry in report["results"] + report["worst_case"]:
        entry["robust_accuracy"] = round(entry["robust_accuracy"] * scale, 3)
        entry["ci95"] = list(wilson_interval(round(entry["robust_accuracy"] * entry["n"]), entry["n"]))
    (run / "evals" / "last-20261123-073000.json").write_text(json.dumps(report))


def drawn(c: LineChart) -> list[str]:
    """The chart as it shows on screen, one string per row."""
    return c.render().plain.splitlines()


async def open_compare(pilot, runs: list[Path]) -> None:
    pilot.app.open_compare(runs)
    await wait_until(pilot, lambda: loaded(pilot.app), what="the runs")
    await wait_until(pilot, lambda: chart(pilot.app, "cmp-eps").size.width > 0, what="the charts' layout")
    await pilot.pause(0.1)


# What the fixed runs' one evaluation (tests/tui/data/quickstart/report.json) holds: value [Wilson 95%].
REPORT_ROWS = [("clean", ["98.5 [95.7-99.5]"]), ("FGSM@0.05", ["95.5 [91.7-97.6]"]), ("PGD@0.05", ["95.5 [91.7-97.6]"]),
               ("worst custom@0.05", ["95.5 [91.7-97.6]"]), ("FGSM@0.1", ["84.0 [78.3-88.4]"]),
               ("PGD@0.1", ["83.5 [77.7-88.0]"]), ("worst custom@0.1", ["83.5 [77.7-88.0]"])]


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


def test_follower_reads_only_what_changed(fixed_runs):
    run = fixed_runs / STOPPED
    follower = RunFollower(run)
    assert follower.refresh() is True
    view = follower.view()
    assert view.state == "stopped" and len(view.history.epochs) == 6 and view.config["epochs"] == 15
    assert follower.refresh() is False  # nothing changed: nothing to redraw
    step = {"kind": "step", "epoch": 7, "batch": 3, "step": 141, "train_loss": 0.3}
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(step) + "\n")
    assert follower.refresh() is False  # a step line: Compare draws nothing per step
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write(json.dumps(epoch_record(7)) + "\n")
    assert follower.refresh() is True and sorted(follower.view().history.epochs) == list(range(1, 8))
    assert sorted(view.history.epochs) == list(range(1, 7))  # a view taken before stays as it was
    set_status(run, epoch=7)
    assert follower.refresh() is True and follower.view().status.epoch == 7
    # A resume rewrote the stream: the history starts over from the new file.
    replace_file(run / "metrics.jsonl", "".join(json.dumps(epoch_record(e)) + "\n" for e in (1, 2)))
    assert follower.refresh() is True and sorted(follower.view().history.epochs) == [1, 2]
    # The folder gone: a one-line reason, not a traceback.
    gone = RunFollower(fixed_runs / "missing")
    assert gone.refresh() is True and gone.view().error == f"{fixed_runs / 'missing'}: no such folder"


def test_robust_rows_are_the_reports_numbers_per_metric_and_run(fixed_runs):
    views = []
    for run in (FINISHED, STOPPED):
        follower = RunFollower(fixed_runs / run)
        follower.refresh()
        views.append(follower.view())
    table = robust_table(views)
    assert table.models == [FINISHED]  # the stopped run has no evaluation: a note, not a column of dashes
    assert robust_rows(table) == REPORT_ROWS
    assert table.cell(FINISHED, "PGD@0.1").ci95 == tuple(json.loads((DATA / "report.json").read_text())
                                                         ["results"][3]["ci95"])
    assert epoch_span(views) == (1.0, 15.0)  # the whole schedule, though one run stopped at epoch 6
    evaluate(fixed_runs / STOPPED, 0.5)
    follower = RunFollower(fixed_runs / STOPPED)
    follower.refresh()
    table = robust_table([views[0], follower.view()])
    assert table.models == [FINISHED, STOPPED]
    assert dict(robust_rows(table))["PGD@0.1"] == ["83.5 [77.7-88.0]", "41.7 [34.9-48.4]"]
    assert "ccn-20261123-072000: last.pt (1 report)" in table.framing.notes[1]


def test_legend_names_drop_the_time_stamp_only_while_they_stay_apart():
    assert short_names([FINISHED, STOPPED]) == ["quickstart", "ccn"]
    assert short_names(["a-20260101-000000", "a-20260102-000000"]) == ["a-20260101-000000", "a-20260102-000000"]


# -- the screen --------------------------------------------------------------------------------

async def test_overlays_one_series_per_run_and_lists_differing_keys(fixed_runs):
    edit_config(fixed_runs / STOPPED, "lr: 0.003", "lr: 0.001")
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        app.open_compare([fixed_runs / FINISHED, fixed_runs / STOPPED])
        await wait_until(pilot, lambda: loaded(app), what="the runs")
        for chart_id in ("cmp-clean", "cmp-loss"):
            assert list(chart(app, chart_id).series) == ["quickstart", "ccn"]
        assert len(chart(app, "cmp-clean").series["quickstart"][0]) == 15
        assert len(chart(app, "cmp-clean").series["ccn"][0]) == 6
        # Only the finished run has an evaluation: its worst case, starting at clean accuracy (eps 0).
        assert chart(app, "cmp-eps").series == {"quickstart": ([0.0, 0.05, 0.1], [0.985, 0.955, 0.835])}
        notes = str(app.screen.query_one("#compare-notes", Static).render())
        assert "no evaluation" in notes and STOPPED in notes

        table = app.screen.query_one("#compare-table", DataTable)
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
        await wait_until(pilot, lambda: loaded(app), what="the runs")
        assert len(chart(app, "cmp-loss").series["pcl"][0]) == 3
        with open(fixed_runs / FAILED / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(epoch_record(4)) + "\n")
        await wait_until(pilot, lambda: len(chart(app, "cmp-loss").series["pcl"][0]) == 4, what="the appended epoch")
        # A resume rewrote the stream: the curve is the new file's, not the old one plus it.
        replace_file(fixed_runs / STOPPED / "metrics.jsonl", json.dumps(epoch_record(1)) + "\n")
        await wait_until(pilot, lambda: chart(app, "cmp-loss").series["ccn"][0] == [1.0], what="the rewritten stream")


async def test_the_table_keeps_its_cursor_while_a_run_trains_and_rebuilds_when_rows_change(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        app.open_compare([fixed_runs / FINISHED, fixed_runs / STOPPED])
        await wait_until(pilot, lambda: loaded(app), what="the runs")
        await pilot.press("2")
        table = app.screen.query_one("#compare-table", DataTable)
        table.focus()
        await pilot.press("down", "down", "down", "down", "down")
        assert table.cursor_row == 5
        rows = table.row_count
        assert cell(app, "summary:epochs", 2) == "6/15"
        # A heartbeat of a run that trains on: its cells change in place.
        set_status(fixed_runs / STOPPED, epoch=7, best_clean=0.95)
        await wait_until(pilot, lambda: cell(app, "summary:epochs", 2) == "7/15", what="the new epoch count")
        assert table.cursor_row == 5 and table.row_count == rows  # where the user left it
        # A config change that adds a differing key: a new row, so the table is built again.
        edit_config(fixed_runs / STOPPED, "lr: 0.003", "lr: 0.001")
        await wait_until(pilot, lambda: "optimizer.lr" in [r.value for r in table.rows], what="the new row")
        assert table.row_count == rows + 1
        assert [str(c) for c in table.get_row("optimizer.lr")[1:]] == ["0.003", "0.001"]


async def test_a_folder_that_is_not_a_run_gets_a_note_not_a_traceback(fixed_runs):
    (fixed_runs / "junk").mkdir()
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_compare([fixed_runs / FINISHED, fixed_runs / "junk", fixed_runs / "missing"])
        await wait_until(pilot, lambda: loaded(app), what="the runs")
        notes = str(app.screen.query_one("#compare-notes", Static).render())
        assert "junk: not a run folder" in notes and "missing: no such folder" in notes
        assert "two or more" in notes
        assert list(chart(app, "cmp-clean").series) == ["quickstart"]


def test_every_binding_is_described():
    assert all(b.description for b in CompareScreen.BINDINGS)


async def test_charts_keep_legends_off_the_data_and_mark_sparse_points(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_compare(pilot, [fixed_runs / FINISHED, fixed_runs / STOPPED])
        for chart_id, title in (("cmp-clean", "clean accuracy"), ("cmp-robust", "robust accuracy"),
                                ("cmp-loss", "train loss"), ("cmp-eps", "robust acc vs eps")):
            first, *plot = drawn(chart(app, chart_id))
            assert first.startswith(title) and "quickstart" in first  # title and legend on the first line
            assert not any("quickstart" in row for row in plot)  # and not on the data
        # Robust accuracy is measured every 5 epochs: markers; clean accuracy every epoch: a line.
        assert chart(app, "cmp-robust").marked == {"quickstart", "ccn"} and not chart(app, "cmp-clean").marked
        assert chart(app, "cmp-eps").marked == {"quickstart"}
        assert drawn(chart(app, "cmp-clean"))[-1].split() == ["1", "5", "10", "15"]  # whole epochs, the whole run


async def test_m_maximises_the_focused_chart_and_restores_it(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_compare(pilot, [fixed_runs / FINISHED, fixed_runs / STOPPED])
        screen = app.screen
        await pilot.press("3", "m")  # from another tab: back to the curves, the clean accuracy chart
        assert screen.maximized is chart(app, "cmp-clean")
        await pilot.press("m")
        assert screen.maximized is None
        chart(app, "cmp-eps").focus()
        await pilot.press("m")
        await pilot.pause(0.1)
        assert screen.maximized is chart(app, "cmp-eps") and chart(app, "cmp-eps").size.width == 80
        await pilot.press("escape")
        assert screen.maximized is None and isinstance(app.screen, CompareScreen)


async def test_robust_tab_shows_each_metric_with_its_interval_and_x_exports_it(fixed_runs):
    app = app_for(fixed_runs)
    runs = [fixed_runs / FINISHED, fixed_runs / STOPPED]
    async with app.run_test(size=(80, 24)) as pilot:
        await open_compare(pilot, runs)
        await pilot.press("3")
        table = app.screen.query_one("#compare-robust", DataTable)
        assert table.display and [str(c.label) for c in table.columns.values()] == ["metric", "quickstart"]
        assert [(str(r[0]), [str(c) for c in r[1:]]) for r in map(table.get_row_at, range(table.row_count))] \
            == REPORT_ROWS
        caption = str(app.screen.query_one("#robust-caption", Static).render())
        assert "[95% interval]" in caption and "quickstart: best.pt (1 report)" in caption
        await pilot.press("x")
        folder = fixed_runs / "compare"
        stem = export_stem(FIXED_NOW)
        files = {suffix: folder / f"{stem}{suffix}" for suffix in (".md", ".csv", ".tex", ".json")}
        await wait_until(pilot, lambda: all(f.is_file() for f in files.values()), what="the exported files")
        # The same table as `workbench compare` prints: a run without evaluations is in the notes.
        expected = build_compare_table(runs)
        for (suffix, path), fmt in zip(files.items(), ("md", "csv", "latex", "json")):
            assert path.read_bytes().decode() == render(expected, fmt), suffix
        assert json.loads(files[".json"].read_text())["cells"][0]["ci95"] == [0.9568335194437211, 0.9948858548155076]
        await wait_until(pilot, lambda: any(f"{folder / stem}.{{csv,json,tex,md}}" in str(n.message)
                                            for n in app._notifications), what="the notification")
        await pilot.press("x")  # a second export in the same second keeps the first
        await wait_until(pilot, lambda: (folder / f"{stem}-1.md").is_file(), what="the second export")


async def test_export_without_evaluations_says_so(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_compare(pilot, [fixed_runs / FAILED, fixed_runs / STOPPED])
        await pilot.press("x")
        await wait_until(pilot, lambda: any("no evaluations" in str(n.message) for n in app._notifications),
                         what="the warning")
        assert not (fixed_runs / "compare").exists()


def _open_it(fixed_runs, keys=()):
    async def run_before(pilot):
        await open_compare(pilot, [fixed_runs / FINISHED, fixed_runs / STOPPED])
        await pilot.press(*keys)
        await wait_until_settled(pilot)
    return run_before


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_compare_curves_snapshot(fixed_runs, snap_compare, size):
    assert snap_compare(app_for(fixed_runs), terminal_size=size, run_before=_open_it(fixed_runs))


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_compare_robust_tab_snapshot(fixed_runs, snap_compare, size):
    evaluate(fixed_runs / STOPPED, 0.8)  # two runs evaluated: a column each
    assert snap_compare(app_for(fixed_runs), terminal_size=size, run_before=_open_it(fixed_runs, ["3"]))
