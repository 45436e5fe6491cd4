"""The New run screen: catalog, fitting models, defense hyperparameters, validation, launch, save."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from textual.widgets import Checkbox, Input, Select, Static

from workbench.config import load_profile, read_yaml
from workbench.errors import WorkbenchError
from workbench.runs import Status, effective_state, stop_run
from workbench.tui.app import WorkbenchApp
from workbench.tui.model import run_form
from workbench.tui.screens.confirm import ConfirmScreen
from workbench.tui.screens.new_run import NewRunScreen
from workbench.tui.screens.save_profile import SaveProfileScreen
from workbench.tui.widgets.form_row import FormRow
from workbench.tui.widgets.run_form_view import options_of

from .fixed_runs import FIXED_NOW
from .waiting import wait_until, wait_until_settled


async def settle(pilot, screen: NewRunScreen, since: int | None = None) -> None:
    """Wait until the edits after generation `since` have been checked as a whole."""
    await pilot.pause()
    if since is not None:
        await wait_until(pilot, lambda: screen.generation > since, timeout=20, what="the edit to register")
    await wait_until(pilot, lambda: screen.state in ("valid", "invalid"), timeout=20, what="the config check")


async def open_form(app: WorkbenchApp, pilot) -> NewRunScreen:
    app.open_new_run()
    await wait_until(pilot, lambda: isinstance(app.screen, NewRunScreen) and app.screen.catalog is not None,
                     timeout=20, what="the catalog")
    screen = app.screen
    await settle(pilot, screen)
    return screen


async def edit(pilot, screen: NewRunScreen, selector: str, value) -> None:
    since = screen.generation
    screen.query_one(selector).value = value
    await settle(pilot, screen, since)


def row_error(screen: NewRunScreen, key: str) -> str:
    return next(row.error for row in screen.query(FormRow) if row.key == key)


async def test_catalog_loads_and_model_select_lists_only_fitting_models(tmp_path):
    app = WorkbenchApp(tmp_path / "runs")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_form(app, pilot)
        assert not screen.query_one("#catalog-state", Static).display  # "loading…" gone
        cat = screen.catalog
        model = screen.query_one("#f-model-name", Select)
        assert screen.query_one("#f-dataset", Select).value == "digits"
        digits_models = options_of(model)
        assert digits_models == cat.models_for("digits") and "tiny" in digits_models
        assert "cnn3" not in digits_models and "vgg19" not in digits_models  # need >= 20 px / 32 px images
        await edit(pilot, screen, "#f-dataset", "cifar10")
        cifar_models = options_of(model)
        assert "vgg19" in cifar_models and "cnn3" in cifar_models
        assert model.value == "tiny"  # still fits: kept
        assert screen.state == "valid"
        device = screen.query_one("#device", Select)
        assert device.value == "auto" and options_of(device) == list(cat.devices)


async def test_changing_the_defense_rebuilds_its_inputs_with_schema_defaults(tmp_path):
    app = WorkbenchApp(tmp_path / "runs")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_form(app, pilot)
        assert screen.query_one("#p-smoothing", Input).value == "0.0"
        await edit(pilot, screen, "#f-defense-name", "pcl")
        assert not screen.query("#p-smoothing")
        assert screen.query_one("#p-tau", Input).value == "1.0"
        assert screen.query_one("#p-warmup_epochs", Input).value == ""  # null default
        assert screen.query_one("#p-mode", Select).value == "code"
        assert screen.query_one("#p-reset_optimizer", Checkbox).value is True
        assert run_form.parse_value(run_form.ParamSpec("heads", "yaml", None),
                                    screen.query_one("#p-heads", Input).value) == \
            screen.catalog.defenses["pcl"].defaults()["heads"]
        assert "Prototype Conformity" in str(screen.query_one("#defense-paper", Static).render())
        # pcl on tiny has no gap/fc1/fc2 taps: the whole-config check says so at the defense.
        assert screen.state == "invalid" and "tap" in row_error(screen, "defense.name")
        await edit(pilot, screen, "#f-defense-name", "label_smoothing")
        assert screen.query_one("#p-smoothing", Input).value == "0.1"  # that defense's own default
        assert screen.state == "valid"
        # Defaults are not written out: the config names the defense only.
        assert screen.config()["defense"] == "label_smoothing"


async def test_invalid_values_are_flagged_on_the_field_and_launch_refuses(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    app = WorkbenchApp(runs)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_form(app, pilot)
        said: list[str] = []  # notices expire after seconds on screen: record them as they are given
        monkeypatch.setattr(screen, "notify", lambda message, **kw: said.append(str(message)))
        await edit(pilot, screen, "#f-epochs", "0")
        assert row_error(screen, "epochs") == "must be > 0"
        assert screen.query_one("#f-epochs", Input).has_class("-invalid")
        await pilot.press("ctrl+l")
        await pilot.pause()
        # Refused on the spot: no launch started, the reason shown.
        assert screen.state != "launching" and app.screen is screen and not runs.exists()
        assert said and "cannot launch" in said[-1]
        await edit(pilot, screen, "#f-epochs", "2")
        assert row_error(screen, "epochs") == "" and screen.state == "valid"

        await edit(pilot, screen, "#f-adv_train-eps", "-0.1")
        assert "must be a finite number >= 0" in row_error(screen, "adv_train.eps")
        await edit(pilot, screen, "#f-adv_train-eps", "[0.1, 0.3]")  # a range is allowed
        assert screen.state == "valid"

        await edit(pilot, screen, "#f-defense-name", "lrn")
        await edit(pilot, screen, "#p-size", "big")
        assert "whole number" in row_error(screen, "defense.params.size")
        await edit(pilot, screen, "#p-size", "5")
        # A value only the defense's schema rejects: found by validate_config, shown at its field.
        await edit(pilot, screen, "#f-defense-name", "ccn")
        await edit(pilot, screen, "#p-layers", "5")
        assert screen.state == "invalid" and row_error(screen, "defense.params.layers")
        await pilot.press("ctrl+l")
        await pilot.pause()
        assert app.screen is screen and not runs.exists() and screen.state == "invalid"
        assert sum("cannot launch" in m for m in said) == 2


async def test_quickstart_with_two_epochs_launches_a_real_run(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    app = WorkbenchApp(runs)
    opened: list[Path] = []
    monkeypatch.setattr(app, "open_monitor", opened.append)
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_form(app, pilot)
        await edit(pilot, screen, "#profile", "quickstart")
        assert screen.query_one("#f-name", Input).value == "quickstart"
        assert screen.query_one("#f-adv_train-attack", Select).value == "pgd"
        await edit(pilot, screen, "#f-epochs", "2")
        assert screen.state == "valid"
        await pilot.press("ctrl+l")
        await wait_until(pilot, lambda: opened, timeout=60, what="the launch")
        assert not isinstance(app.screen, NewRunScreen)  # the form gave way to the monitor
    run = opened[0]
    try:
        assert run.parent == runs and run.name.startswith("quickstart-")
        config = read_yaml(run / "config.yaml")
        assert config["epochs"] == 2
        # The unchanged keys equal the CLI's `workbench train --profile quickstart --set epochs=2`.
        assert config == load_profile("quickstart", ["epochs=2"])[0].model_dump(mode="json")
        assert list((runs / ".profiles").glob("quickstart-*.yaml"))
        deadline = time.monotonic() + 60
        state = None
        while time.monotonic() < deadline:
            state = effective_state(Status.read(run / "status.json"))
            if state in ("running", "finished"):
                break
            await asyncio.sleep(0.2)
        assert state in ("running", "finished"), state
    finally:
        if effective_state(Status.read(run / "status.json")) in ("running", "starting"):
            stop_run(run)


async def test_save_profile_writes_yaml_that_load_profile_accepts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = WorkbenchApp(tmp_path / "runs")
    async with app.run_test(size=(100, 32)) as pilot:
        screen = await open_form(app, pilot)
        await edit(pilot, screen, "#profile", "quickstart")
        await edit(pilot, screen, "#f-epochs", "3")
        await edit(pilot, screen, "#f-optimizer-lr", "1e-3")
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, SaveProfileScreen)
        assert app.screen.query_one(Input).value == "./quickstart.yaml"
        await pilot.press("enter")
        await pilot.pause()
        saved = tmp_path / "quickstart.yaml"
        assert read_yaml(saved) == screen.config()
        cfg, _ = load_profile(str(saved))
        assert (cfg.epochs, cfg.optimizer.lr, cfg.adv_train.attack, cfg.model.options) == \
            (3, 1e-3, "pgd", {"width": 16, "hidden": 64})

        # An existing file is only overwritten after a yes.
        await edit(pilot, screen, "#f-epochs", "4")
        await pilot.press("ctrl+s", "enter")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert read_yaml(saved)["epochs"] == 3
        await pilot.press("ctrl+s", "enter", "y")
        await pilot.pause()
        assert read_yaml(saved)["epochs"] == 4 and isinstance(app.screen, NewRunScreen)


def test_form_keeps_profile_keys_and_writes_defaults_only_where_the_profile_had_them():
    base = {"dataset": "mnist", "model": {"name": "cnn6", "normalize": "dataset"},
            "defense": {"name": "pcl", "tau": 1.0, "warmup_epochs": 50}, "schedule": {"name": "cosine"}}
    values = run_form.form_values(base, "pcl_mnist")
    assert values[run_form.PARAMS] == {"tau": 1.0, "warmup_epochs": 50}
    values.update({"model.name": "lenet5", "epochs": 7})
    out = run_form.build_config(base, values, None)
    assert out["name"] == "pcl_mnist" and out["schedule"] == {"name": "cosine"}
    assert out["model"] == {"name": "lenet5", "normalize": "dataset"} and out["epochs"] == 7
    assert out["defense"] == {"name": "pcl", "params": {"tau": 1.0, "warmup_epochs": 50}}
    assert "adv_train" not in out and "optimizer" not in out  # defaults the profile never wrote
    assert run_form.field_for("model.width") == "model.name"
    assert run_form.field_for("adv_train.ratio") == "adv_train.attack"
    assert run_form.split_error("form: epochs: must be > 0") == ("epochs", "must be > 0")


def test_launch_refuses_an_invalid_config_before_writing_anything(tmp_path):
    runs = tmp_path / "runs"
    bad = {"name": "x", "dataset": "digits", "model": "vgg19"}  # 32-px model on 8-px images
    with pytest.raises(WorkbenchError, match="model.name: model 'vgg19' does not fit digits"):
        run_form.launch_training(bad, runs, "cpu")
    assert not runs.exists()
    from workbench.runs import control

    assert control._error_line("note: x\nerror: unknown device 'tpu'\n") == "unknown device 'tpu'"
    assert control.train_command(Path("p.yaml"), runs, "cpu")[1:] == [
        "-m", "workbench", "train", "--profile", "p.yaml", "--out", str(runs), "--device", "cpu", "--detach"]


def test_two_launches_of_one_name_in_one_second_get_their_own_profile_files(tmp_path):
    first = run_form.launch_profile_path(tmp_path, "quickstart", now=1795410000.0)
    second = run_form.launch_profile_path(tmp_path, "quickstart", now=1795410000.0)
    assert first != second and first.exists() and second.exists()


@pytest.fixture
def cpu_only(monkeypatch):
    """The snapshot shows the device `auto` picks: make it the same on machines with a GPU. The catalog
    comes from the backend process, so hide the GPU from a fresh one (it inherits the environment)."""
    from workbench.tui.model import backend_client

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    backend_client.close_shared()
    yield
    backend_client.close_shared()  # the next test's backend sees the GPU again


async def quickstart_form(pilot) -> None:
    screen = await open_form(pilot.app, pilot)
    await edit(pilot, screen, "#profile", "quickstart")
    assert screen.state == "valid"


def test_new_run_snapshot_quickstart(fixed_runs, cpu_only, snap_compare):
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=(100, 32),
                        run_before=quickstart_form)


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_new_run_form_snapshot(fixed_runs, cpu_only, snap_compare, size):
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=size,
                        run_before=quickstart_form)


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_save_profile_dialog_snapshot(fixed_runs, cpu_only, snap_compare, size):
    async def run_before(pilot) -> None:
        await quickstart_form(pilot)
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, SaveProfileScreen), timeout=20,
                         what="the save dialog")
        await wait_until_settled(pilot)

    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=size, run_before=run_before)
