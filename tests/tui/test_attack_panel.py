"""The attack panel: form -> CLI args, report -> rows/series, half-block images, and the screen itself
(past evaluations, a real PGD evaluation, a crashed job, re-attaching, refusing bad input)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.color import Color
from rich.console import Console
from textual.widgets import Checkbox, DataTable, Input, ProgressBar, Select, Static

from workbench.tui.app import WorkbenchApp
from workbench.tui.model import report_view
from workbench.tui.model.attack_form import (
    ATTACK_NAMES, AttackForm, FormError, build_args, load_catalog, parse_eps, relevant_params,
)
from workbench.tui.model.examples_view import amplified_perturbation, load_examples
from workbench.tui.screens.attack import AttackScreen
from workbench.tui.widgets.example_gallery import ExampleGallery
from workbench.tui.widgets.history_table import HistoryTable
from workbench.tui.widgets.image_grid import HalfBlockImage
from workbench.tui.widgets.job_view import JobView
from workbench.tui.widgets.line_chart import LineChart

from .fixed_runs import DATA, FINISHED, FIXED_NOW

REPORT = json.loads((DATA / "report.json").read_text())


def app_for(runs: Path) -> WorkbenchApp:
    return WorkbenchApp(runs, clock=lambda: FIXED_NOW, poll_seconds=0.1)


async def wait_for(pilot, condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the screen")
        await pilot.pause(0.05)


def cells(table: DataTable) -> list[list[str]]:
    return [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]


def as_text(renderable) -> str:
    console = Console(width=100, record=True, file=open(os.devnull, "w"))
    console.print(renderable)
    return console.export_text()


def job_line(screen) -> str:
    return str(screen.query_one("#job-line", Static).render())


# -- the form: choices -> exact CLI arguments ----------------------------------------------------

def test_form_builds_the_exact_cli_arguments():
    form = AttackForm(attacks=["pgd", "fgsm"], eps="0.1, 8/255", n="100", save_examples="2",
                      params={"steps": "20", "restarts": "2", "loss": "cw", "c": "5", "queries": "50"})
    # Catalog order; only the parameters the chosen attacks read (no C&W c, no Square queries).
    assert build_args(form) == ["--fgsm", "--pgd", "--eps", "0.1,8/255", "--norm", "linf", "--steps", "20",
                                "--restarts", "2", "--loss", "cw", "--n", "100", "--save-examples", "2"]
    paper = AttackForm(attacks=["cw", "deepfool"], preset="pcl", norm="l2", eps="", n="", save_examples="0",
                       head="prototype", device="cpu", params={"c": "0.1", "search_steps": "3", "d": "0.1,0.2"})
    assert build_args(paper) == ["--cw", "--deepfool", "--preset", "pcl", "--no-strong", "--norm", "l2",
                                 "--c", "0.1", "--search-steps", "3", "--d", "0.1,0.2", "--head", "prototype",
                                 "--device", "cpu"]
    assert build_args(AttackForm(preset="strong", strong=True)) == [
        "--preset", "strong", "--strong", "--norm", "linf", "--n", "500", "--save-examples", "8"]
    assert relevant_params(["square", "spsa"]) == ["steps", "restarts", "queries"]


@pytest.mark.parametrize("form, message", [
    (AttackForm(attacks=["pgd"], eps="0.1,abc"), "'abc' is not a number"),
    (AttackForm(attacks=["pgd"], eps="1/0"), "is not a number"),
    (AttackForm(attacks=["pgd"], eps="3"), "larger than the [0, 1] pixel range"),
    (AttackForm(attacks=["pgd"], eps="-0.1"), ">= 0"),
    (AttackForm(attacks=[]), "at least one attack or a preset"),
    (AttackForm(attacks=["fgsm"], norm="l2"), "FGSM is an L-inf attack"),
    (AttackForm(attacks=["pgd"], params={"steps": "ten"}), "steps: 'ten' is not a whole number"),
    (AttackForm(attacks=["pgd"], params={"step_size": "0"}), "step size must be > 0"),
    (AttackForm(attacks=["pgd"], n="0"), "samples n must be >= 1"),
    (AttackForm(attacks=["pgd"], save_examples="-1"), "save examples must be >= 0"),
])
def test_form_refuses_bad_input_with_one_line(form, message):
    with pytest.raises(FormError) as err:
        build_args(form)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_l2_eps_may_exceed_one_and_blank_is_the_default():
    assert parse_eps("0.5,2", "l2") == [0.5, 2.0]
    assert parse_eps("  ", "linf") is None


def test_catalog_is_every_attack_of_the_cli_with_the_engines_norms():
    from attacks import ATTACKS

    from workbench.cli import ATTACK_FLAGS

    assert ATTACK_NAMES == ATTACK_FLAGS
    for info in load_catalog():
        assert info.norms == tuple(ATTACKS.get(info.name).norms)
        assert info.description


# -- the report: rows, series, worst case --------------------------------------------------------

def test_report_rows_follow_the_saved_report():
    rows = report_view.table_rows(REPORT)
    assert rows[0][:4] == ("clean", "-", "98.5%", "95.7–99.5")
    assert [r[:3] for r in rows[1:]] == [
        ("FGSM", "0.05", "95.5%"), ("FGSM", "0.1", "84.0%"), ("PGD", "0.05", "95.5%"), ("PGD", "0.1", "83.5%"),
        ("worst case", "0.05", "95.5%"), ("worst case", "0.1", "83.5%")]
    assert rows[4][4:] == ("15.2%", "0.09", "0.81s", "custom")
    assert len(rows[0]) == len(report_view.COLUMNS)


def test_report_series_per_attack_and_worst_case():
    series = report_view.series(REPORT)
    assert series == {"FGSM": ([0.05, 0.1], [0.955, 0.84]), "PGD": ([0.05, 0.1], [0.955, 0.835]),
                      "worst case": ([0.05, 0.1], [0.955, 0.835])}
    assert report_view.worst_case(REPORT) == (0.1, 0.835)
    assert report_view.summary(REPORT) == "digits/tiny/softmax · n=200 · clean 98.5% · worst 83.5% at eps 0.1"


def test_report_with_several_protocols_and_minimum_norm_rows():
    report = {"clean_accuracy": 0.9, "results": [
        {"protocol": "paper:pcl", "label": "FGSM", "eps": 0.1, "value": 0.1, "robust_accuracy": 0.5},
        {"protocol": "strong", "label": "FGSM", "eps": 0.1, "value": 0.1, "robust_accuracy": 0.4},
        {"protocol": "paper:ccn", "label": "DeepFool d", "sweep_param": "max_ratio", "eps": None, "value": 0.2,
         "robust_accuracy": 0.3},
        {"protocol": "paper:pcl", "label": "C&W", "eps": None, "value": None, "robust_accuracy": 0.1}]}
    assert set(report_view.series(report)) == {"paper:pcl:FGSM", "strong:FGSM"}
    assert [r[1] for r in report_view.table_rows(report)[1:]] == ["0.1", "0.1", "max_ratio=0.2", "min"]


# -- images ----------------------------------------------------------------------------------------

def test_half_block_image_two_pixels_per_cell():
    gray = HalfBlockImage([[0.0, 1.0], [0.5, 0.2]])
    assert gray.cells() == [[(Color.from_rgb(0, 0, 0), Color.from_rgb(128, 128, 128)),
                             (Color.from_rgb(255, 255, 255), Color.from_rgb(51, 51, 51))]]
    rgb = HalfBlockImage([[(1, 0, 0), (0, 1, 0)], [(0, 0, 1), (1, 1, 1)]])
    console = Console(width=20, color_system="truecolor", force_terminal=True)
    segments = [s for s in console.render(rgb) if s.text.strip()]
    assert [s.text for s in segments] == ["▀", "▀"]
    assert segments[0].style.color.triplet == (255, 0, 0) and segments[0].style.bgcolor.triplet == (0, 0, 255)
    assert segments[1].style.color.triplet == (0, 255, 0) and segments[1].style.bgcolor.triplet == (255, 255, 255)
    odd = HalfBlockImage([[0.0], [1.0], [0.5]], scale=2)  # 6x2 after scaling: 3 lines, 2 cells
    assert len(odd.cells()) == 3 and all(len(line) == 2 for line in odd.cells())


def test_amplified_perturbation_maps_largest_change_to_black_or_white():
    clean = [[0.5, 0.5], [0.5, 0.5]]
    adv = [[0.6, 0.5], [0.4, 0.55]]
    out = amplified_perturbation(clean, adv)
    assert out[0] == pytest.approx([1.0, 0.5]) and out[1] == pytest.approx([0.0, 0.75])
    assert amplified_perturbation(clean, clean) == [[0.5, 0.5], [0.5, 0.5]]


def test_examples_file_loads_as_plain_images():
    examples = load_examples(DATA / "examples.pt")
    assert len(examples) == 16
    first = examples[0]
    assert first.group == ("custom", "FGSM", 0.05) and len(first.clean) == 8 and len(first.clean[0]) == 8
    assert first.caption() == "#0 true 3 · clean 3 (0.99) · adv 3 (0.96)"
    assert examples[3].fooled  # true 9, adversarial 3


# -- the screen ---------------------------------------------------------------------------------

async def open_panel(pilot, target: Path | None) -> AttackScreen:
    pilot.app.open_attack(target)
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, AttackScreen)
                   and bool(pilot.app.screen.query("#history-table")))
    await pilot.pause()
    return pilot.app.screen


async def test_past_evaluation_is_listed_and_reopens_with_table_chart_and_gallery(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        history = screen.query_one("#history-table", DataTable)
        await wait_for(pilot, lambda: history.row_count == 1)
        row = cells(history)[0]
        assert row[2:] == ["FGSM,PGD", "0.05,0.1", "98.5%", "83.5%", "best.pt"] and "finished" in row[1]
        assert app.focused is history
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.examples_ready)
        table = screen.query_one("#report-table", DataTable)
        assert cells(table)[0][:3] == ["clean", "-", "98.5%"]
        assert [r[0] for r in cells(table)] == ["clean", "FGSM", "FGSM", "PGD", "PGD", "worst case", "worst case"]
        assert screen.query_one(LineChart).points == 6
        gallery = screen.query_one(ExampleGallery)
        assert gallery.current_label == "FGSM eps 0.05" and len(gallery.shown) == 4
        await pilot.press("3", "right_square_bracket")
        assert gallery.current_label == "FGSM eps 0.1"
        text = as_text(gallery.render())
        assert "#0 true 3 · clean 3 (0.99) · adv 3 (0.89)" in text and "perturbation" in text
        assert text.count("▀") == 4 * 3 * (8 * 2) * (8 * 2 // 2)  # 4 examples x 3 images of 8x8 at scale 2


async def test_bad_eps_and_missing_checkpoint_are_refused(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        screen.query_one("#atk-pgd", Checkbox).value = True
        screen.query_one("#eps", Input).value = "0.1,zero"
        await pilot.press("ctrl+r")
        assert "eps: 'zero' is not a number" in job_line(screen)
        screen.query_one("#eps", Input).value = "0.1"
        screen.query_one("#ckpt-path", Input).value = "runs/nope.pt"
        await pilot.press("ctrl+r")
        assert "checkpoint runs/nope.pt does not exist" in job_line(screen)
        screen.query_one("#ckpt-path", Input).value = str(fixed_runs / FINISHED)
        await pilot.press("ctrl+r")
        assert "is not a file" in job_line(screen)
        await pilot.pause(0.2)
        assert not (fixed_runs / FINISHED / "evals" / "jobs").exists()  # nothing was launched


async def test_without_a_target_any_checkpoint_path_shows_its_evaluations(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_panel(pilot, None)
        assert "Choose a checkpoint" in str(screen.query_one("#history-empty", Static).render())
        path = screen.query_one("#ckpt-path", Input)
        path.focus()
        await pilot.pause()
        assert "any checkpoint file" in str(screen.query_one("#hint", Static).render())
        path.value = str(fixed_runs / FINISHED / "checkpoints" / "best.pt")
        history = screen.query_one("#history-table", DataTable)
        await wait_for(pilot, lambda: history.row_count == 1)
        screen.query_one("#atk-cw", Checkbox).focus()
        await pilot.pause()
        assert "C&W-L2:" in str(screen.query_one("#hint", Static).render())


def _job_file(evals: Path, name: str, **fields) -> Path:
    jobs = evals / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    data = {"state": "running", "checkpoint": str(evals.parent / "checkpoints" / "best.pt"),
            "args": ["--pgd", "--eps", "0.1"], "host": socket.gethostname(), "started": FIXED_NOW - 60,
            "updated": FIXED_NOW - 30, "label": "PGD", "done": 30, "total": 100, **fields}
    (jobs / f"{name}.json").write_text(json.dumps(data))
    return jobs / f"{name}.json"


async def test_crashed_job_shows_crashed_and_its_log_tail(fixed_runs):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # reaped: its pid is gone
    path = _job_file(fixed_runs / FINISHED / "evals", "best-crashed", pid=dead.pid)
    path.with_suffix(".log").write_text("loading model\nTraceback (most recent call last):\nRuntimeError: boom\n")
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        history = screen.query_one("#history-table", DataTable)
        await wait_for(pilot, lambda: history.row_count == 2)
        assert "crashed" in cells(history)[0][1]  # jobs first, then reports
        await pilot.press("enter")
        await wait_for(pilot, lambda: "crashed" in job_line(screen))
        detail = str(screen.query_one("#job-detail", Static).render())
        assert "RuntimeError: boom" in detail and "Traceback" in detail


async def test_reopening_reattaches_to_a_running_evaluation(fixed_runs):
    # This test process stands in for the evaluating process: alive, and never signalled.
    _job_file(fixed_runs / FINISHED / "evals", "best-running", pid=os.getpid())
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        await wait_for(pilot, lambda: "PGD 30/100" in job_line(screen))
        assert "running" in job_line(screen)
        bar = screen.query_one("#job-progress", ProgressBar)
        assert bar.display and bar.total == 100 and bar.progress == 30
        assert screen.query_one(JobView).path.name == "best-running.json"


async def test_cancel_signals_the_followed_evaluation(fixed_runs):
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        _job_file(fixed_runs / FINISHED / "evals", "best-slow", pid=proc.pid)
        app = app_for(fixed_runs)
        async with app.run_test(size=(100, 32)) as pilot:
            screen = await open_panel(pilot, fixed_runs / FINISHED)
            await wait_for(pilot, lambda: "running" in job_line(screen))
            await pilot.press("ctrl+t")
            await wait_for(pilot, lambda: "cancelled" in job_line(screen))
            assert proc.poll() is not None or not os.path.exists(f"/proc/{proc.pid}")
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_real_pgd_evaluation_on_a_quickstart_checkpoint(quickstart_run):
    app = WorkbenchApp(quickstart_run.parent, poll_seconds=0.1)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, quickstart_run)
        assert screen.query_one("#ckpt-path", Input).value == str(quickstart_run / "checkpoints" / "best.pt")
        screen.query_one("#atk-pgd", Checkbox).value = True
        screen.query_one("#eps", Input).value = "0.1"
        screen.query_one("#n", Input).value = "100"
        screen.query_one("#save-examples", Input).value = "2"
        screen.query_one("#device", Select).value = "cpu"
        await pilot.press("ctrl+r")
        await wait_for(pilot, lambda: screen.report is not None, timeout=90)
        rows = {r[0]: r for r in cells(screen.query_one("#report-table", DataTable))}
        clean, pgd = float(rows["clean"][2].rstrip("%")), float(rows["PGD"][2].rstrip("%"))
        assert rows["PGD"][1] == "0.1" and pgd < clean
        assert screen.report["n"] == 100
        assert screen.report_path.parent == quickstart_run / "evals" and screen.report_path.is_file()
        assert "finished" in job_line(screen)
        await wait_for(pilot, lambda: screen.examples_ready, timeout=20)
        assert len(screen.query_one(ExampleGallery).shown) <= 2
        history = screen.query_one("#history-table", DataTable)
        await wait_for(pilot, lambda: any(k.value == f"report:{screen.report_path}" for k in history.rows), 10)


# -- snapshot ----------------------------------------------------------------------------------

def test_attack_panel_snapshot_past_evaluation_reopened(fixed_runs, snap_compare):
    async def reopen(pilot):
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        await wait_for(pilot, lambda: screen.catalog_ready and screen.query_one(HistoryTable).items)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen.examples_ready)
        await pilot.pause(0.2)

    assert snap_compare(app_for(fixed_runs), terminal_size=(100, 32), run_before=reopen)
