"""The attack panel remembers the settings last launched, and reruns a past evaluation from its History tab:
the form <-> argument list <-> report codecs, then the panel itself on evaluations the real code saved (a
copy of the session's quickstart run, evaluated by the CLI and by the panel) and on job files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from textual.widgets import Button, Checkbox, Input, Select, TabbedContent
from typer.testing import CliRunner

from workbench.cli import app as cli
from workbench.errors import WorkbenchError
from workbench.tui.app import WorkbenchApp
from workbench.tui.model import past_settings, remembered_form
from workbench.tui.model.attack_form import (
    PRESETS, AttackForm, FormError, build_args, fit_to_catalog, form_from_args, load_catalog,
)
from workbench.tui.screens import attack
from workbench.tui.widgets.attack_options import AttackOptions
from workbench.tui.widgets.history_table import HistoryTable

from .fixed_runs import FINISHED
from .test_attack_panel import _job_file, app_for, attack_help_lines, job_line, open_panel
from .waiting import wait_until

CATALOG = load_catalog()
# What the CLI evaluation below was given, and the same as the panel's argument list (catalog order).
CLI_ARGS = ["--fgsm", "--attack", "pgd:steps=7,step_size=0.01", "--eps", "0.05,0.1", "--n", "40",
            "--save-examples", "2", "--device", "cpu"]
PANEL_ARGS = ["--fgsm", "--attack", "pgd:steps=7,step_size=0.01", "--eps", "0.05,0.1", "--norm", "linf", "--n", "40",
              "--save-examples", "2", "--device", "cpu"]


# -- the codecs (pure) ---------------------------------------------------------------------------

@pytest.mark.parametrize("form", [
    AttackForm(attacks=["pgd", "fgsm", "apgd_t"], eps="0.1, 8/255", n="100", save_examples="2",
               params={"pgd": {"steps": "20", "restarts": "2", "loss": "cw"}}),
    AttackForm(attacks=["cw", "deepfool"], preset="pcl", norm="l2", n="", save_examples="0", head="prototype",
               device="cpu", params={"cw": {"c": "0.1"}, "deepfool": {"max_ratio": "0.1, 0.2"}}),
    AttackForm(preset="strong", strong=True),
    AttackForm(attacks=["pgd"], preset="adr", adaptive=True),
])
def test_an_argument_list_reads_back_as_the_form_that_made_it(form):
    args = build_args(form, CATALOG)
    back, missing = form_from_args(args, CATALOG)
    assert build_args(back, CATALOG) == args and missing == []


def test_reading_arguments_names_what_the_form_cannot_hold():
    form, missing = form_from_args(["--pgd", "--seed", "3", "--attack=pgd:steps=2", "--targeted", "--eps=0.1"],
                                   CATALOG)
    assert form.attacks == ["pgd"] and form.eps == "0.1" and form.n == "" and form.save_examples == "0"
    assert missing == ["--seed 3", "a second pgd (pgd:steps=2)", "--targeted"]
    assert form_from_args([], CATALOG) == (AttackForm(attacks=["pgd"], n="", save_examples="0"),
                                           ["the job recorded no arguments"])


def test_adaptive_attacks_need_the_softmax_head():
    with pytest.raises(FormError, match="adaptive attacks go through the softmax model"):
        build_args(AttackForm(attacks=["pgd"], adaptive=True, head="prototype"), CATALOG)
    assert build_args(AttackForm(attacks=["pgd"], adaptive=True), CATALOG)[:2] == ["--pgd", "--adaptive"]


def test_a_saved_form_is_fitted_to_the_catalog_of_today():
    form = AttackForm(attacks=["pgd", "gone"], preset="nope", device="tpu",
                      params={"pgd": {"steps": "9", "warp": "2", "random_start": "No", "loss": "mse"},
                              "gone": {"x": "1"}})
    dropped = fit_to_catalog(form, CATALOG, tuple(PRESETS))
    assert dropped == ["attack gone (no longer registered)", "PGD warp=2", "PGD loss=mse", "device tpu", "preset nope"]
    assert form.attacks == ["pgd"] and form.params == {"pgd": {"steps": "9", "random_start": "false"}}
    assert (form.device, form.preset) == ("auto", "")


def test_the_remembered_form_survives_a_round_trip_and_any_bad_file(tmp_path):
    form = AttackForm(attacks=["fgsm", "pgd"], params={"pgd": {"steps": "7", "loss": ""}}, eps="0.1", n="40",
                      preset="pcl", strong=True, adaptive=True, save_examples="0", device="cpu")
    remembered_form.save(tmp_path, form)
    path = tmp_path / ".workbench" / "attack_form.json"
    assert [p.name for p in path.parent.iterdir()] == ["attack_form.json"]  # no temp file left behind
    back, dropped = remembered_form.from_json(remembered_form.load(tmp_path), CATALOG, tuple(PRESETS))
    assert back == AttackForm(**{**form.__dict__, "params": {"pgd": {"steps": "7"}}}) and dropped == []
    for text in ("", "{", "[1, 2]", json.dumps({"format": "workbench-attack-form", "version": 99, "form": {}})):
        path.write_text(text)
        assert remembered_form.from_json(remembered_form.load(tmp_path), CATALOG, tuple(PRESETS)) == (None, [])
    path.write_text(json.dumps({"format": "workbench-attack-form", "version": 1, "form": {
        "attacks": ["pgd", 3, "gone"], "params": {"pgd": {"steps": 7, "restarts": "2"}, "fgsm": "x"},
        "eps": 0.1, "strong": "yes", "adaptive": 1, "n": "40"}}))
    odd, dropped = remembered_form.from_json(remembered_form.load(tmp_path), CATALOG, tuple(PRESETS))
    assert odd == AttackForm(attacks=["pgd"], params={"pgd": {"restarts": "2"}}, n="40")  # wrong types: defaults
    assert dropped == ["attack gone (no longer registered)"]
    assert remembered_form.load(tmp_path / "missing") is None


# -- real reports ----------------------------------------------------------------------------------

def _cli(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output + repr(result.exception)


@pytest.fixture(scope="module")
def evaluated_run(quickstart_dir, tmp_path_factory) -> Path:
    """A copy of the quickstart run (without the evaluations other tests saved) with one CLI evaluation."""
    run = tmp_path_factory.mktemp("rerun") / "runs" / quickstart_dir.name
    shutil.copytree(quickstart_dir, run, ignore=shutil.ignore_patterns("evals"))
    _cli("attack", str(run / "checkpoints" / "best.pt"), *CLI_ARGS, "--quiet")
    return run


@pytest.fixture
def run_copy(evaluated_run, tmp_path, monkeypatch) -> Path:
    """The evaluated run in this test's own runs folder (the panel writes into it); the test runs in tmp_path."""
    run = tmp_path / "runs" / evaluated_run.name
    shutil.copytree(evaluated_run, run)
    monkeypatch.chdir(tmp_path)
    return run


def _report(run: Path) -> tuple[Path, dict]:
    path = next((run / "evals").glob("best-*.json"))
    return path, json.loads(path.read_text())


def _older(report: dict) -> dict:
    """The report as a version of workbench without `specs` and `save_examples` saved it."""
    return {k: v for k, v in report.items() if k not in ("specs", "save_examples")}


def test_a_report_gives_back_the_settings_it_ran_with(evaluated_run):
    path, report = _report(evaluated_run)
    settings = past_settings.from_report(report, path.parent, CATALOG, tuple(PRESETS))
    assert build_args(settings.form, CATALOG) == PANEL_ARGS and settings.complete
    assert settings.checkpoint == evaluated_run / "checkpoints" / "best.pt"
    older = past_settings.from_report({**_older(report), "seed": 3, "amp": "bf16"}, path.parent, CATALOG,
                                      tuple(PRESETS))
    assert older.missing == ["PGD step_size (left auto)", "how many examples were saved", "seed 3", "amp bf16"]
    assert older.form.params == {"pgd": {"steps": "7"}} and older.form.eps == "0.05,0.1" and not older.complete
    moved = past_settings.from_report({**report, "checkpoint": "elsewhere/gone.pt"}, path.parent, CATALOG, ())
    assert moved.checkpoint is None and moved.missing == ["checkpoint gone.pt (not found)"]


def test_a_reports_protocols_give_back_its_preset_strong_and_adaptive():
    def form_of(*protocols: str) -> AttackForm:
        report = {"protocols": [{"name": p} for p in protocols], "n": 10, "results": []}
        return past_settings.from_report(report, None, CATALOG, tuple(PRESETS)).form

    assert (form_of("paper:pcl", "strong").preset, form_of("paper:pcl", "strong").strong) == ("pcl", True)
    assert (form_of("strong").preset, form_of("strong").strong) == ("strong", False)  # --preset strong
    assert (form_of("custom", "strong", "adaptive").strong, form_of("custom", "adaptive").adaptive) == (True, True)


# -- the panel -------------------------------------------------------------------------------------

def _capture_launches(monkeypatch) -> list[tuple[Path, list[str]]]:
    launched: list[tuple[Path, list[str]]] = []

    def record(path, args):
        launched.append((Path(path), list(args)))
        raise WorkbenchError("recorded, not started")

    monkeypatch.setattr(attack, "launch_evaluation", record)
    return launched


async def _history_row(pilot, screen, key: str) -> None:
    """The History tab in front, its cursor on the row `key`."""
    table = screen.query_one(HistoryTable)
    await wait_until(pilot, lambda: key in table.items, what=f"the history row {key}")
    await pilot.press("4")
    table.move_cursor(row=list(table.items).index(key))
    await pilot.pause()


def _shown(screen) -> tuple:
    options = screen.query_one(AttackOptions)
    return (options.checked(), options.text("param-pgd-steps"), options.text("param-pgd-step_size"),
            options.text("eps"), options.text("n"), options.text("save-examples"), options.text("device"))


async def test_r_reruns_a_cli_evaluation_with_its_settings(run_copy, monkeypatch):
    launched = _capture_launches(monkeypatch)
    path, _ = _report(run_copy)
    app = WorkbenchApp(run_copy.parent, poll_seconds=0.1)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, run_copy)
        await _history_row(pilot, screen, f"report:{path}")
        assert screen.check_action("rerun", (True,))  # r and e work on the History tab
        await pilot.press("r")
        await wait_until(pilot, lambda: launched, what="the rerun's launch")
        assert launched == [(run_copy / "checkpoints" / "best.pt", PANEL_ARGS)]
        assert _shown(screen) == (["fgsm", "pgd"], "7", "0.01", "0.05,0.1", "40", "2", "cpu")
        assert screen.query_one(TabbedContent).active == "results" and not screen.check_action("rerun", (True,))
    saved = remembered_form.from_json(remembered_form.load(run_copy.parent), CATALOG, tuple(PRESETS))[0]
    assert build_args(saved, CATALOG) == PANEL_ARGS  # a rerun is a launch: its settings are the last ones


async def test_an_older_report_fills_the_form_and_says_what_it_lacks(run_copy, monkeypatch):
    launched = _capture_launches(monkeypatch)
    path, report = _report(run_copy)
    older = path.with_name("best-20200101-000000.json")
    older.write_text(json.dumps({**_older(report), "created": report["created"] - 60}))
    app = WorkbenchApp(run_copy.parent, poll_seconds=0.1)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, run_copy)
        await _history_row(pilot, screen, f"report:{older}")
        await pilot.press("r")
        await wait_until(pilot, lambda: "in the form" in job_line(screen), what="the filled form")
        assert job_line(screen) == ("settings of best-20200101-000000.json in the form: ^r runs them · not restored: "
                                    "PGD step_size (left auto), how many examples were saved")
        assert _shown(screen) == (["fgsm", "pgd"], "7", "", "0.05,0.1", "40", "8", "cpu")
        assert screen.focused is screen.query_one("#run-button", Button) and not launched  # ^r is the user's call
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: launched, what="the launch")
        assert launched[0][1] == ["--fgsm", "--attack", "pgd:steps=7", "--eps", "0.05,0.1", "--norm", "linf", "--n",
                                  "40", "--save-examples", "8", "--device", "cpu"]


async def test_a_panel_evaluation_reruns_with_its_exact_arguments(run_copy, monkeypatch):
    app = WorkbenchApp(run_copy.parent, poll_seconds=0.1)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, run_copy)
        options = screen.query_one(AttackOptions)
        options.set_form(AttackForm(attacks=["pgd"], params={"pgd": {"random_start": "false"}}, eps="0.1", n="30",
                                    save_examples="0", device="cpu"))
        before = screen.report_path
        await pilot.press("ctrl+r")  # a real evaluation
        await wait_until(pilot, lambda: screen.report is not None and screen.report_path != before, timeout=120,
                         what="the evaluation's report")
        ran = screen.report_path
        job = json.loads(next((run_copy / "evals" / "jobs").glob("*.json")).read_text())
        items = screen.query_one(HistoryTable).items
        await wait_until(pilot, lambda: f"report:{ran}" in items, what="its row")
        assert screen.query_one(HistoryTable).items[f"report:{ran}"].args == job["args"]  # the job lends its args
        launched = _capture_launches(monkeypatch)
        options.set_form(AttackForm(attacks=["fgsm"]))  # whatever the form holds now: the rerun replaces it
        await _history_row(pilot, screen, f"report:{ran}")
        await pilot.press("r")
        await wait_until(pilot, lambda: launched, what="the rerun's launch")
        assert launched == [(run_copy / "checkpoints" / "best.pt", job["args"])]
        assert job["args"] == ["--attack", "pgd:random_start=false", "--eps", "0.1", "--norm", "linf", "--n", "30",
                               "--device", "cpu"]


async def test_a_failed_job_reruns_and_a_running_one_only_fills_the_form(fixed_runs, monkeypatch):
    import os

    launched = _capture_launches(monkeypatch)
    evals = fixed_runs / FINISHED / "evals"
    args = ["--attack", "apgd_t:steps=5", "--preset", "adr", "--no-strong", "--eps", "0.1", "--norm", "linf",
            "--n", "50", "--device", "cpu"]
    failed = _job_file(evals, "best-failed", state="failed", message="CUDA out of memory", args=args)
    running = _job_file(evals, "best-running", pid=os.getpid(), args=["--fgsm", "--norm", "linf"])
    app = app_for(fixed_runs)
    said: list[str] = []
    app.notify = lambda message, **kwargs: said.append(message)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        await _history_row(pilot, screen, f"job:{running}")
        await pilot.press("r")
        assert said == ["best-running.json is still running: e puts its settings in the form"] and not launched
        await pilot.press("e")
        assert screen.query_one(AttackOptions).checked() == ["fgsm"] and not launched
        await _history_row(pilot, screen, f"job:{failed}")
        await pilot.press("r")
        await wait_until(pilot, lambda: launched, what="the rerun's launch")
        assert launched == [(fixed_runs / FINISHED / "checkpoints" / "best.pt", args)]
        assert screen.query_one("#strong", Checkbox).value is False  # as the job ran: the preset did not reset it


async def test_the_next_panel_opens_with_the_last_launched_settings(fixed_runs, monkeypatch):
    launched = _capture_launches(monkeypatch)
    async with app_for(fixed_runs).run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        screen.query_one("#atk-pgd", Checkbox).value = False
        screen.query_one("#atk-cw", Checkbox).value = True
        screen.query_one("#param-cw-c", Input).value = "0.5"
        screen.query_one("#preset", Select).value = "pcl"
        await pilot.pause()
        screen.query_one("#strong", Checkbox).value = False
        screen.query_one("#norm", Select).value = "l2"
        screen.query_one("#eps", Input).value = "0.5,1"
        screen.query_one("#device", Select).value = "cpu"
        chosen = screen.query_one(AttackOptions).form()
        await pilot.press("ctrl+r")
        await wait_until(pilot, lambda: launched, what="the launch")
    assert (fixed_runs / ".workbench" / "attack_form.json").is_file()
    async with app_for(fixed_runs).run_test(size=(100, 32)) as pilot:  # another session, another checkpoint
        screen = await open_panel(pilot, fixed_runs / FINISHED / "checkpoints" / "last.pt")
        await wait_until(pilot, lambda: screen.query_one(AttackOptions).checked() == ["cw"], what="the last settings")
        assert screen.query_one(AttackOptions).form() == chosen
        assert screen.query_one("#strong", Checkbox).value is False  # the remembered preset did not reset it


async def test_a_remembered_attack_that_is_gone_is_dropped_with_a_note(fixed_runs):
    memory = fixed_runs / ".workbench" / "attack_form.json"
    memory.parent.mkdir()
    memory.write_text(json.dumps({"format": "workbench-attack-form", "version": 1,
                                  "form": {"attacks": ["fgsm", "retired"], "n": "64"}}))
    app = app_for(fixed_runs)
    said: list[str] = []
    app.notify = lambda message, **kwargs: said.append(message)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        assert screen.query_one(AttackOptions).checked() == ["fgsm"] and screen.query_one("#n", Input).value == "64"
        assert said == ["last settings restored without attack retired (no longer registered)"]
    memory.write_text("{not json")
    async with app_for(fixed_runs).run_test(size=(100, 32)) as pilot:
        screen = await open_panel(pilot, fixed_runs / FINISHED)
        assert screen.query_one(AttackOptions).checked() == ["pgd"]  # the defaults


async def test_help_says_what_r_and_e_do(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(140, 40)) as pilot:
        lines = await attack_help_lines(pilot, fixed_runs / FINISHED)
        assert f"  {'r':<14} History: run the evaluation under the cursor again, with its settings (they only fill " \
               "the form when some could not be restored)" in lines
        assert f"  {'e':<14} History: put the settings of the evaluation under the cursor in the form, to change " \
               "them before ^r" in lines
