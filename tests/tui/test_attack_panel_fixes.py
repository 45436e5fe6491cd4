"""The attack panel's help, history times, gallery order and filter, reopening, saved name and form column,
driven through the app with evaluations the real code saved (the fixed run's report and examples, and
evaluations and an audit of a copy of the session's quickstart run)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from textual.widgets import Checkbox, DataTable, Input, Select, Static
from typer.testing import CliRunner

from workbench.cli import app as cli
from workbench.tui.app import WorkbenchApp
from workbench.tui.widgets.attack_options import AttackOptions
from workbench.tui.widgets.example_gallery import ExampleGallery
from workbench.tui.widgets.history_table import HistoryTable

from .fixed_runs import FINISHED
from .test_attack_panel import app_for, as_text, attack_help_lines, cells, job_line, open_panel
from .waiting import wait_until

REPORT_NAME = "best-20261123-065854.json"


def _copy_run(quickstart_dir: Path, base: Path) -> Path:
    """The quickstart run without the evaluations other tests saved into it."""
    run = base / "runs" / quickstart_dir.name
    shutil.copytree(quickstart_dir, run, ignore=shutil.ignore_patterns("evals"))
    return run


def _cli(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)


# 1 -----------------------------------------------------------------------------------------------
async def test_attack_help_lists_bracket_keys_as_plain_text(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 40)) as pilot:
        lines = await attack_help_lines(pilot, fixed_runs / FINISHED)
        assert "[/b]" not in "\n".join(lines)
        assert f"  {'[':<14} Prev examples" in lines and f"  {']':<14} Next examples" in lines
        assert f"  {'f':<14} Filter examples (fooled/robust/all)" in lines


# 2 -----------------------------------------------------------------------------------------------
async def test_an_audit_row_has_its_time_and_sorts_as_the_newest(quickstart_dir, tmp_path):
    run = _copy_run(quickstart_dir, tmp_path)
    ckpt = str(run / "checkpoints" / "best.pt")
    _cli("attack", ckpt, "--fgsm", "--eps", "0.1", "--n", "40", "--device", "cpu", "--quiet")
    time.sleep(1.1)  # the audit's file name holds whole seconds
    _cli("audit", ckpt, "--n", "20", "--queries", "10", "--device", "cpu", "--quiet")
    evals = run / "evals"
    audit = next(evals.glob("audit-best-*.json"))
    app = WorkbenchApp(run.parent, poll_seconds=0.1)
    async with app.run_test(size=(120, 32)) as pilot:
        screen = await open_panel(pilot, run, catalog=False)
        table = screen.query_one(HistoryTable)
        await wait_until(pilot, lambda: table.row_count == 2, what="the report and the audit")
        assert list(table.items)[0] == f"report:{audit}"  # the newest first
        when = cells(table)[0][0]
        assert when.endswith(" ago") and when != "-"


# 3 -----------------------------------------------------------------------------------------------
def _image_columns(text: str) -> set[int]:
    """Where the third image starts on each line of images."""
    starts = set()
    for line in text.splitlines():
        if "▀" not in line:
            continue
        runs = [i for i, ch in enumerate(line) if ch == "▀" and (i == 0 or line[i - 1] != "▀")]
        assert len(runs) == 3, line
        starts.add(runs[2])
    return starts


async def test_gallery_lines_up_lists_the_fooled_first_and_filters(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:  # images at scale 1: narrower than their titles
        screen = await open_panel(pilot, fixed_runs / FINISHED, catalog=False)
        screen.open_report(fixed_runs / FINISHED / "evals" / REPORT_NAME)
        await wait_until(pilot, lambda: screen.examples_ready, what="the examples")
        gallery = screen.query_one(ExampleGallery)
        await pilot.press("3")
        await pilot.pause()
        assert gallery.current_label == "FGSM eps 0.05"
        text = as_text(gallery.render())
        assert len(_image_columns(text)) == 1, text  # the titled first row lines up with the others
        shown = gallery.shown
        assert [e.fooled for e in shown] == [True, False, False, False]  # the file has it fourth
        assert shown[0].caption() == "#3 fooled 9 → 3, 0.62 · clean 9 (0.56)" and shown[0].caption() in text
        assert "fooled 1/4 · showing all" in text
        await pilot.press("f")
        assert gallery.filter == "fooled" and [e.sample for e in gallery.shown] == [3]
        await pilot.press("f")
        assert gallery.filter == "robust" and all(not e.fooled for e in gallery.shown) and len(gallery.shown) == 3
        await pilot.press("right_square_bracket")  # the filter stays while paging
        assert gallery.filter == "robust" and all(not e.fooled for e in gallery.shown)
        await pilot.press("f")
        assert gallery.filter == "all" and len(gallery.shown) == 4


# 4 -----------------------------------------------------------------------------------------------
async def test_reopening_the_panel_shows_the_latest_evaluation(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED, catalog=False)
        await wait_until(pilot, lambda: screen.report_path is not None, what="the latest evaluation")
        assert screen.report_path.name == REPORT_NAME
        summary = str(screen.query_one("#report-summary", Static).render())
        assert summary.startswith(REPORT_NAME) and "No evaluation shown" not in summary
        assert [r[0] for r in cells(screen.query_one("#report-table", DataTable))][:2] == ["clean", "FGSM"]


# 5 -----------------------------------------------------------------------------------------------
async def test_a_finished_evaluation_is_named_by_its_saved_report(quickstart_dir, tmp_path):
    run = _copy_run(quickstart_dir, tmp_path)
    app = WorkbenchApp(run.parent, poll_seconds=0.1)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_panel(pilot, run)
        screen.query_one("#atk-pgd", Checkbox).value = True
        screen.query_one("#eps", Input).value = "0.1"
        screen.query_one("#n", Input).value = "40"
        screen.query_one("#save-examples", Input).value = "0"
        screen.query_one("#device", Select).value = "cpu"
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: screen.report is not None, timeout=120, what="the evaluation's report")
        assert screen.report_path.parent == run / "evals" and screen.report_path.is_file()
        assert job_line(screen) == f"finished {screen.report_path.name}"  # not the job file's launch-time name


# 6 -----------------------------------------------------------------------------------------------
async def test_the_form_grows_with_the_terminal_and_checkboxes_differ(fixed_runs):
    widths = {}
    for columns, rows in ((80, 24), (120, 32)):
        async with app_for(fixed_runs).run_test(size=(columns, rows)) as pilot:
            screen = await open_panel(pilot, fixed_runs / FINISHED)
            eps = screen.query_one("#eps", Input)
            widths[columns] = (screen.query_one(AttackOptions).outer_size.width,
                               screen.query_one("#ckpt-path", Input).content_size.width, eps.content_size.width)
            if columns == 120:
                assert eps.content_size.width >= len(eps.placeholder)  # "default (per data)" whole
                on, off = screen.query_one("#atk-pgd", Checkbox), screen.query_one("#atk-fgsm", Checkbox)
                assert on.value and not off.value
                on_style, off_style = on.get_visual_style("toggle--button"), off.get_visual_style("toggle--button")
                assert off_style.foreground == off_style.background  # unchecked: an empty box
                assert on_style.background != off_style.background and on_style.foreground != on_style.background
    assert widths[80][0] == 32  # never narrower than it was
    assert widths[120][0] >= 40 and widths[120][1] >= widths[80][1] + 8  # more of the checkpoint path shows


async def test_a_catalog_arriving_after_the_panel_closed_is_dropped():
    # The catalog comes from the backend process; when the user quits as it arrives, the options widget is being
    # unmounted and filling it must stop quietly (it raised NoMatches on the checkboxes the shutdown removed).
    from textual.app import App

    from .test_attack_panel import CATALOG

    class Host(App):
        def compose(self):
            yield AttackOptions([], "")

    async with Host().run_test() as pilot:
        options = pilot.app.query_one(AttackOptions)
        assert await options.set_catalog(CATALOG[:2], {}) is True
        assert len(options.query(Checkbox)) >= 2
        await options.remove()
        assert await options.set_catalog(CATALOG, {}) is False
