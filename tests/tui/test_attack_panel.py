"""The attack panel: form -> CLI args, report -> rows/series, half-block images, and the screen itself
(past evaluations, a real PGD evaluation, a crashed job, re-attaching, refusing bad input)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from rich.color import Color
from rich.console import Console
from textual.widgets import Checkbox, DataTable, Input, ProgressBar, Select, Static, TabbedContent

from workbench.tui.app import WorkbenchApp
from workbench.tui.model import report_view
from workbench.attack_meta import AttackMeta
from workbench.tui.model.attack_form import AttackForm, FormError, build_args, load_catalog, parse_eps
from workbench.tui.model.examples_view import amplified_perturbation, load_examples
from workbench.tui.screens.attack import AttackScreen
from workbench.tui.widgets.example_gallery import ExampleGallery
from workbench.tui.widgets.history_table import HistoryTable
from workbench.tui.widgets.image_grid import HalfBlockImage
from workbench.tui.widgets.job_view import JobView
from workbench.tui.widgets.line_chart import LineChart

from .fixed_runs import DATA, FINISHED, FIXED_NOW
from .waiting import wait_until, wait_until_settled

REPORT = json.loads((DATA / "report.json").read_text())
CATALOG = load_catalog()  # the engine's metadata, as the backend sends it


def app_for(runs: Path) -> WorkbenchApp:
    return WorkbenchApp(runs, clock=lambda: FIXED_NOW, poll_seconds=0.1)


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
    form = AttackForm(attacks=["pgd", "fgsm", "apgd_t"], eps="0.1, 8/255", n="100", save_examples="2",
                      params={"pgd": {"steps": "20", "step_size": " ", "restarts": "2", "loss": "cw"},
                              "fgsm": {"loss": ""}, "cw": {"c": "5"}})
    # Catalog order; blank fields give the attack's flag (or --attack NAME); an unchecked attack's are ignored.
    assert build_args(form, CATALOG) == [
        "--attack", "apgd_t", "--fgsm", "--attack", "pgd:steps=20,restarts=2,loss=cw", "--eps", "0.1,8/255",
        "--norm", "linf", "--n", "100", "--save-examples", "2"]
    paper = AttackForm(attacks=["cw", "deepfool"], preset="pcl", norm="l2", eps="", n="", save_examples="0",
                       head="prototype", device="cpu",
                       params={"cw": {"c": "0.1", "search_steps": "3"}, "deepfool": {"max_ratio": "0.1, 0.2"}})
    assert build_args(paper, CATALOG) == [
        "--attack", "cw:c=0.1,search_steps=3", "--attack", "deepfool:max_ratio=0.1,0.2", "--preset", "pcl",
        "--no-strong", "--norm", "l2", "--head", "prototype", "--device", "cpu"]
    assert build_args(AttackForm(preset="strong", strong=True), CATALOG) == [
        "--preset", "strong", "--strong", "--norm", "linf", "--n", "500", "--save-examples", "8"]


def test_the_forms_attack_arguments_parse_as_the_cli_parses_them():
    from workbench.evaluation import parse_choice

    form = AttackForm(attacks=["pgd", "deepfool", "autoattack"], norm="l2",
                      params={"pgd": {"steps": "7", "random_start": "false"}, "deepfool": {"max_ratio": "0.1,0.3"},
                              "autoattack": {"version": "fast"}})
    args = build_args(form, CATALOG)
    choices = {c.name: c.values for c in (parse_choice(args[i + 1]) for i, a in enumerate(args) if a == "--attack")}
    assert choices == {"autoattack": {"version": "fast"}, "deepfool": {"max_ratio": (0.1, 0.3)},
                       "pgd": {"steps": 7, "random_start": False}}


@pytest.mark.parametrize("form, message", [
    (AttackForm(attacks=["pgd"], eps="0.1,abc"), "'abc' is not a number"),
    (AttackForm(attacks=["pgd"], eps="1/0"), "is not a number"),
    (AttackForm(attacks=["pgd"], eps="3"), "larger than the whole [0, 1] pixel range"),
    (AttackForm(attacks=["pgd"], eps="-0.1"), ">= 0"),
    (AttackForm(attacks=[]), "at least one attack or a preset"),
    (AttackForm(attacks=["nope"]), "unknown attack 'nope'"),
    (AttackForm(attacks=["fgsm"], norm="l2"), "FGSM supports norm linf only"),
    (AttackForm(attacks=["pgd"], params={"pgd": {"steps": "ten"}}), "PGD steps: 'ten' is not a whole number"),
    (AttackForm(attacks=["pgd"], params={"pgd": {"step_size": "0"}}), "PGD step_size: must be > 0"),
    (AttackForm(attacks=["autoattack"], params={"autoattack": {"version": "slow"}}), "must be one of standard, fast"),
    (AttackForm(attacks=["pgd"], n="0"), "samples n must be >= 1"),
    (AttackForm(attacks=["pgd"], save_examples="-1"), "save examples must be >= 0"),
])
def test_form_refuses_bad_input_with_one_line(form, message):
    with pytest.raises(FormError) as err:
        build_args(form, CATALOG)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_l2_eps_may_exceed_one_and_blank_is_the_default():
    assert parse_eps("0.5,2", "l2") == [0.5, 2.0]
    assert parse_eps("  ", "linf") is None


def test_catalog_is_every_registered_attack_with_its_metadata():
    from attacks import ATTACKS

    assert [m.name for m in CATALOG] == ATTACKS.names()
    for meta in CATALOG:
        assert meta.norms == tuple(ATTACKS.get(meta.name).norms) and meta.summary and meta.title
        assert AttackMeta.from_json(json.loads(json.dumps(meta.to_json()))) == meta  # what the backend sends


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


def test_report_view_tolerates_null_and_wrong_types():
    # An older or hand-edited report: nothing here may raise (it runs in a UI-thread handler).
    bad = {"results": None, "worst_case": None, "clean_accuracy": "high", "n": "all", "examples": 5}
    assert report_view.results(bad) == [] and report_view.worst_rows(bad) == []
    assert report_view.table_rows(bad) == [("clean", "-", "-", "-", "-", "-", "-", "-")]
    assert report_view.series(bad) == {} and report_view.worst_case(bad) is None
    assert report_view.summary(bad) == "n=all · clean -"
    assert report_view.examples_path(bad) is None
    odd = {"results": [5, {"label": "PGD", "eps": "0.1", "robust_accuracy": float("nan"), "ci95": [0.1]},
                       {"attack": None, "protocol": None}],
           "worst_case": {"eps": 0.1}, "clean_accuracy": True, "examples": "x" * 5000}
    assert report_view.table_rows(odd) == [
        ("clean", "-", "-", "-", "-", "-", "-", "-"),
        ("PGD", "min", "-", "-", "-", "-", "-", ""), ("?", "min", "-", "-", "-", "-", "-", "None")]
    assert report_view.series(odd) == {} and report_view.summary(odd) == "clean -"
    assert report_view.examples_path(odd, Path("evals/r.json")) == Path("x" * 5000)  # too long a name: no raise


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
    assert first.caption() == "#0 robust 3 → 3, 0.96 · clean 3 (0.99)"
    assert examples[3].fooled  # true 9, adversarial 3


# -- the screen ---------------------------------------------------------------------------------

async def open_panel(pilot, target: Path | None, catalog: bool = True) -> AttackScreen:
    pilot.app.open_attack(target)
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, AttackScreen)
                     and bool(pilot.app.screen.query("#history-table")), what="the attack panel")
    if catalog:  # the attacks come from the backend process, which imports torch first: seconds on a busy machine
        await wait_until(pilot, lambda: pilot.app.screen.catalog_ready, timeout=90, what="the attacks from the backend")
    await pilot.pause()
    return pilot.app.screen


async def attack_help_lines(pilot, target: Path) -> list[str]:
    """Open the attack panel on `target`, press ? and return the help's lines (the help screen stays open)."""
    from textual.widgets import Static

    from workbench.tui.screens.help import HelpScreen

    await open_panel(pilot, target, catalog=False)
    await pilot.press("question_mark")
    assert isinstance(pilot.app.screen, HelpScreen)
    return str(pilot.app.screen.query_one("#help-text", Static).render()).splitlines()


async def test_past_evaluation_is_listed_and_reopens_with_table_chart_and_gallery(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        history = screen.query_one("#history-table", DataTable)
        await wait_until(pilot, lambda: history.row_count == 1, what="one past evaluation")
        row = cells(history)[0]
        assert row[2:] == ["FGSM,PGD", "0.05,0.1", "98.5%", "83.5%", "best.pt"] and "finished" in row[1]
        # Reopened: the panel loads the latest evaluation by itself (enter on a history row opens any other).
        await wait_until(pilot, lambda: screen.examples_ready, what="the examples")
        assert screen.report_path is not None and screen.report_path.name == "best-20261123-065854.json"
        # In front by itself (History stays in front only when a job heads it). It once came back behind History
        # now and then: the screen's automatic first focus, landing late in the History pane, re-activated it.
        assert screen.query_one(TabbedContent).active == "results"
        table = screen.query_one("#report-table", DataTable)
        assert cells(table)[0][:3] == ["clean", "-", "98.5%"]
        assert [r[0] for r in cells(table)] == ["clean", "FGSM", "FGSM", "PGD", "PGD", "worst case", "worst case"]
        assert screen.query_one(LineChart).points == 6
        gallery = screen.query_one(ExampleGallery)
        assert gallery.current_label == "FGSM eps 0.05" and len(gallery.shown) == 4
        await pilot.press("3", "right_square_bracket")
        assert gallery.current_label == "FGSM eps 0.1"
        text = as_text(gallery.render())
        assert "#0 robust 3 → 3, 0.89 · clean 3 (0.99)" in text and "perturbation" in text
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
        await wait_until(pilot, lambda: history.row_count == 1, what="the typed checkpoint's evaluation")
        screen.query_one("#atk-cw", Checkbox).focus()
        await pilot.pause()
        assert "C&W-L2:" in str(screen.query_one("#hint", Static).render())


async def test_a_checked_attack_shows_its_own_parameters_and_launches_with_them(fixed_runs, monkeypatch):
    from workbench.errors import WorkbenchError
    from workbench.tui.screens import attack

    launched: list[list[str]] = []

    def record(path, args):
        launched.append(args)
        raise WorkbenchError("recorded")

    monkeypatch.setattr(attack, "launch_evaluation", record)
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        group = screen.query_one("#params-apgd_t")
        assert screen.query_one("#atk-pgd", Checkbox).value and not group.display  # PGD only, as the CLI
        screen.query_one("#atk-pgd", Checkbox).value = False
        screen.query_one("#atk-apgd_t", Checkbox).value = True  # no shorthand flag: --attack NAME
        await pilot.pause()
        assert group.display and not screen.query_one("#params-pgd").display
        steps = screen.query_one("#param-apgd_t-steps", Input)
        assert steps.placeholder == "100"  # the declared default
        steps.value = "5"
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: launched, what="the launch")
        assert launched[0][:3] == ["--attack", "apgd_t:steps=5", "--norm"]


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
        await wait_until(pilot, lambda: history.row_count == 2, what="the crashed job and the report")
        assert "crashed" in cells(history)[0][1]  # jobs first, then reports
        await pilot.press("enter")
        await wait_until(pilot, lambda: "crashed" in job_line(screen), what="the crashed state")
        detail = str(screen.query_one("#job-detail", Static).render())
        assert "RuntimeError: boom" in detail and "Traceback" in detail


async def test_bad_report_and_job_files_never_hide_the_good_ones(fixed_runs):
    evals = fixed_runs / FINISHED / "evals"
    (evals / "best-corrupt.json").write_text('{"results": [')
    older = {**REPORT, "created": "2020-01-01T00:00:00", "n": "all", "protocols": None, "worst_case": None,
             "results": [{"label": "PGD", "eps": "0.1", "robust_accuracy": "x"}, 5, None], "examples": None}
    (evals / "best-older.json").write_text(json.dumps(older))
    _job_file(evals, "best-odd", state="failed", started="yesterday", args="--pgd", pid="x", done="y", message=7)
    _job_file(evals, "best-unknown", state="paused")
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        table = screen.query_one(HistoryTable)
        await wait_until(pilot, lambda: table.row_count == 3, what="the readable job and reports")
        assert list(table.items) == [f"job:{evals / 'jobs' / 'best-odd.json'}",
                                     f"report:{evals / 'best-20261123-065854.json'}", f"report:{evals / 'best-older.json'}"]
        assert cells(table)[0][2:] == ["pgd", "default", "-", "-", "best.pt"] and "failed" in cells(table)[0][1]
        assert cells(table)[2][2:] == ["PGD", "-", "98.5%", "-", "best.pt"]
        note = screen.query_one("#history-note", Static)
        assert note.display
        assert str(note.render()) == "left out, unreadable: best-corrupt.json, best-unknown.json"
        table.move_cursor(row=2)
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.report_path is not None and screen.examples_ready,
                         what="the older report")
        assert screen.report_path.name == "best-older.json"
        assert [r[:3] for r in cells(screen.query_one("#report-table", DataTable))] == [
            ["clean", "-", "98.5%"], ["PGD", "min", "-"]]
        assert "n=all" in str(screen.query_one("#report-summary", Static).render())
        assert "no examples saved" in as_text(screen.query_one(ExampleGallery).render())
        table.move_cursor(row=0)
        await pilot.press("4", "enter")
        await wait_until(pilot, lambda: "failed" in job_line(screen), what="the odd job's state")
        assert "no reason given" in job_line(screen)  # its message was not text


async def test_a_failing_poll_is_a_line_and_the_next_poll_recovers(fixed_runs, monkeypatch):
    from workbench.tui.screens import attack
    from workbench.tui.widgets import job_view

    def flaky(real, error, broken):
        """`real`, raising `error` while `broken` is set (the first call always raises)."""
        calls = []

        def call(*args, **kwargs):
            calls.append(1)
            if len(calls) == 1 or broken.is_set():
                raise error
            return real(*args, **kwargs)
        return call

    # The history stays broken until its message has been seen: a poll every 2 s on a loaded machine could
    # otherwise replace the message before the test looks.
    disk_on_fire = threading.Event()
    disk_on_fire.set()
    monkeypatch.setattr(attack, "list_reports", flaky(attack.list_reports, RuntimeError("disk on fire"), disk_on_fire))
    monkeypatch.setattr(job_view, "tail_lines", flaky(job_view.tail_lines, OSError("log moved"), threading.Event()))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _job_file(fixed_runs / FINISHED / "evals", "best-crashed", pid=dead.pid).with_suffix(".log").write_text("boom\n")
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED, catalog=False)
        note = screen.query_one("#history-note", Static)
        await wait_until(pilot, lambda: "cannot read the evaluations: disk on fire" in str(note.render()),
                         what="the failed history poll's message")
        disk_on_fire.clear()
        history = screen.query_one(HistoryTable)
        await wait_until(pilot, lambda: history.row_count == 2 and not note.display, timeout=15,
                         what="the next history poll")
        await pilot.press("enter")
        await wait_until(pilot, lambda: "crashed" in job_line(screen), what="the next job poll")
        assert "boom" in str(screen.query_one("#job-detail", Static).render())


async def test_a_launch_that_fails_says_why(fixed_runs, monkeypatch):
    from workbench.errors import WorkbenchError
    from workbench.tui.screens import attack

    def cannot(path, args):
        raise WorkbenchError("could not start the evaluation process: [Errno 24] Too many open files")

    monkeypatch.setattr(attack, "launch_evaluation", cannot)
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        screen.query_one("#atk-pgd", Checkbox).value = True
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: "Too many open files" in job_line(screen), what="the launch error")
        assert "could not start the evaluation" in job_line(screen)


async def test_a_cancelled_job_shows_cancelled_without_its_log(fixed_runs):
    path = _job_file(fixed_runs / FINISHED / "evals", "best-cancelled", state="cancelled", message="cancelled")
    path.with_suffix(".log").write_text("Traceback (most recent call last):\nKeyboardInterrupt\n")
    app = app_for(fixed_runs)
    said: list[str] = []
    app.notify = lambda message, **kwargs: said.append(message)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        history = screen.query_one(HistoryTable)
        await wait_until(pilot, lambda: history.row_count == 2, what="the cancelled job and the report")
        assert "cancelled" in cells(history)[0][1]
        await pilot.press("enter")
        await wait_until(pilot, lambda: "cancelled" in job_line(screen), what="the cancelled state")
        assert not screen.query_one("#job-detail", Static).display  # no log dump: nothing went wrong
        await pilot.press("ctrl+t")
        assert said == ["no evaluation running: best-cancelled is cancelled"]  # nothing was signalled


async def test_reopening_reattaches_to_a_running_evaluation(fixed_runs):
    # This test process stands in for the evaluating process: alive, and never signalled.
    _job_file(fixed_runs / FINISHED / "evals", "best-running", pid=os.getpid())
    app = app_for(fixed_runs)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        await wait_until(pilot, lambda: "PGD 30/100" in job_line(screen), what="the running job's progress")
        assert "running" in job_line(screen)
        bar = screen.query_one("#job-progress", ProgressBar)
        assert bar.display and bar.total == 100 and bar.progress == 30
        assert screen.query_one(JobView).path.name == "best-running.json"


async def test_a_running_evaluation_shows_its_stage_robust_count_and_eta(fixed_runs):
    # What `workbench attack --job-file` writes: the latest progress event, elapsed seconds and the ETA,
    # 30 s before the (fixed) clock: the panel ages both by that much.
    event = {"kind": "step", "label": "AutoAttack", "protocol": "custom", "spec_index": 0, "specs": 2,
             "sweep_param": "eps", "value": 0.1, "value_index": 0, "values": 1, "chunk": 0, "chunks": 1, "rows": 60,
             "done": 0, "total": 60, "stage": "apgd_t", "stage_index": 1, "stages": 4, "step": 40, "steps": 100,
             "robust": 44, "attacked": 60}
    _job_file(fixed_runs / FINISHED / "evals", "best-aa", pid=os.getpid(), label="AutoAttack", done=0, total=60,
              event=event, elapsed=60.0, eta=100.0, finished_tasks=1)
    app = app_for(fixed_runs)
    async with app.run_test(size=(160, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        await wait_until(pilot, lambda: "apgd_t" in job_line(screen), what="the running job's stage")
        assert job_line(screen) == ("running best-aa · [1/2] AutoAttack eps 0.1 · apgd_t 2/4 step 40/100 · "
                                    "robust 44/60 · 1m30s · eta 1m10s · 1 attack(s) done")
        bar = screen.query_one("#job-progress", ProgressBar)
        assert bar.total == 60 and bar.progress == pytest.approx(60 * (1 + 0.4) / 4)  # within the chunk


async def test_cancel_signals_the_followed_evaluation(fixed_runs):
    proc = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        _job_file(fixed_runs / FINISHED / "evals", "best-slow", pid=proc.pid)
        app = app_for(fixed_runs)
        async with app.run_test(size=(100, 32)) as pilot:
            screen = await open_panel(pilot, fixed_runs / FINISHED)
            await wait_until(pilot, lambda: "running" in job_line(screen), what="the running job")
            await pilot.press("ctrl+t")
            await wait_until(pilot, lambda: "cancelled" in job_line(screen), what="the cancelled state")
            assert proc.poll() is not None or not os.path.exists(f"/proc/{proc.pid}")
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_real_pgd_evaluation_on_a_quickstart_checkpoint(quickstart_dir):
    app = WorkbenchApp(quickstart_dir.parent, poll_seconds=0.1)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, quickstart_dir)
        assert screen.query_one("#ckpt-path", Input).value == str(quickstart_dir / "checkpoints" / "best.pt")
        screen.query_one("#atk-pgd", Checkbox).value = True
        screen.query_one("#eps", Input).value = "0.1"
        screen.query_one("#n", Input).value = "100"
        screen.query_one("#save-examples", Input).value = "2"
        screen.query_one("#device", Select).value = "cpu"
        # The panel opens on the checkpoint's latest evaluation (other tests may have saved some): wait for a new one.
        before = screen.report_path
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: screen.report is not None and screen.report_path != before, timeout=120,
                         what="the evaluation's report")
        rows = {r[0]: r for r in cells(screen.query_one("#report-table", DataTable))}
        clean, pgd = float(rows["clean"][2].rstrip("%")), float(rows["PGD"][2].rstrip("%"))
        assert rows["PGD"][1] == "0.1" and pgd < clean
        assert screen.report["n"] == 100
        assert screen.report_path.parent == quickstart_dir / "evals" and screen.report_path.is_file()
        assert "finished" in job_line(screen)
        await wait_until(pilot, lambda: screen.examples_ready, timeout=20, what="the examples")
        gallery = screen.query_one(ExampleGallery)
        # --save-examples 2: up to 2 fooled and 2 robust pairs at the eps
        assert gallery.current_label == "PGD eps 0.1" and 2 <= len(gallery.shown) <= 4
        assert sum(e.fooled for e in gallery.shown) <= 2 and sum(not e.fooled for e in gallery.shown) <= 2
        history = screen.query_one("#history-table", DataTable)
        await wait_until(pilot, lambda: any(k.value == f"report:{screen.report_path}" for k in history.rows),
                         what="the new report in the history")


# -- snapshot ----------------------------------------------------------------------------------

def test_attack_panel_snapshot_past_evaluation_reopened(fixed_runs, snap_compare):
    async def reopen(pilot):
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        await wait_until(pilot, lambda: screen.catalog_ready and screen.query_one(HistoryTable).items,
                         what="the catalog and the history")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.examples_ready, what="the examples")
        await wait_until_settled(pilot)

    assert snap_compare(app_for(fixed_runs), terminal_size=(100, 32), run_before=reopen)


@pytest.mark.parametrize("tab", ["results", "history"])
@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_attack_panel_snapshot_form_with_results_or_history(fixed_runs, snap_compare, size, tab):
    async def reopen(pilot):
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        await wait_until(pilot, lambda: screen.examples_ready, what="the latest evaluation")
        if tab == "history":
            await pilot.press("4")  # its footer adds r (rerun) and e (settings to form)
        await wait_until_settled(pilot)

    assert snap_compare(app_for(fixed_runs), terminal_size=size, run_before=reopen)


async def test_m_maximises_the_robust_curve_and_escape_brings_it_back(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        # With the catalog loaded: one that arrives while the app closes races its checkboxes' mounts.
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        await wait_until(pilot, lambda: screen.report_path is not None, what="the latest evaluation")
        screen.query_one("#report-table", DataTable).focus()
        await pilot.press("m")
        chart = screen.query_one("#report-chart", LineChart)
        assert screen.maximized is chart and screen.query_one(TabbedContent).active == "chart"
        await wait_until_settled(pilot)
        assert chart.size.width == 80 and chart.points == 6
        await pilot.press("escape")
        assert screen.maximized is None and app.screen is screen
