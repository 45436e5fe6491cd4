"""The new-run form's fields: filled from a profile, read back as a config dict, errors shown per field.

It keeps the select options consistent (models that fit the dataset, the defense's own hyperparameters)
and posts `Edited` after every change; checking and launching are the screen's job."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.widgets import Button, Checkbox, Input, Select, Static

from ...config import read_yaml
from ...errors import WorkbenchError
from ..model import run_form as rf
from ..model.catalog import Catalog
from .defense_params import DefenseParams
from .form_row import FormRow
from .spec_validator import SpecValidator


def _input(key: str) -> Input:
    spec = rf.FIELDS[key]
    return Input(id="f-" + key.replace(".", "-"), tooltip=spec.description, compact=True,
                 validators=[SpecValidator(spec)])


def _select(key: str) -> Select:
    # Options arrive with the catalog; a Select without a blank entry would need them at once.
    return Select([], id="f-" + key.replace(".", "-"), tooltip=rf.FIELDS[key].description, compact=True,
                  prompt="(choose)")


def options_of(select: Select) -> list:
    return [value for _, value in select._options if value is not Select.NULL]


def choose(select: Select, value: Any) -> None:
    """Select `value`, adding it (marked unknown) when it is not an option, so a bad profile shows as written."""
    if value is None:
        select.clear()
        return
    options = options_of(select)
    if value not in options:
        select.set_options([(o, o) for o in options] + [(f"{value} (unknown)", value)])
    select.value = value


class RunFormView(VerticalScroll):
    DEFAULT_CSS = """
    RunFormView { height: 1fr; padding: 0 1; }
    RunFormView .form-section { color: $accent; text-style: bold; margin-top: 1; }
    RunFormView #defense-paper { color: $text-muted; padding-left: 18; }
    RunFormView #form-error { margin-top: 1; height: auto; }
    RunFormView #form-buttons { height: auto; margin-top: 1; }
    RunFormView #form-buttons Button { margin-right: 2; }
    """

    class Edited(Message):
        """A field changed (also after a profile filled the form)."""

    def __init__(self, *, id: str | None = None, disabled: bool = False) -> None:
        super().__init__(id=id, disabled=disabled)
        self.catalog: Catalog | None = None
        self.base: dict = {}  # the profile as written: keys the form does not show come from it
        self.filling = False  # a profile is being written into the fields

    def compose(self) -> ComposeResult:
        yield FormRow("profile", Select([], id="profile", compact=True, prompt="(build your own)",
                                        tooltip="a bundled profile fills the form; keys it sets that the form "
                                                "does not show are kept"), "profile")
        yield FormRow("run name", _input("name"), "name")
        yield Static("Data and model", classes="form-section")
        yield FormRow("dataset", _select("dataset"), "dataset")
        yield FormRow("model", _select("model.name"), "model.name")
        yield Static("Defense", classes="form-section")
        yield FormRow("defense", _select("defense.name"), "defense.name")
        yield Static("", id="defense-paper", markup=False)
        yield DefenseParams(id="defense-params")
        yield Static("Adversarial training", classes="form-section")
        yield FormRow("attack", _select("adv_train.attack"), "adv_train.attack")
        yield FormRow("eps", _input("adv_train.eps"), "adv_train.eps")
        yield FormRow("steps", _input("adv_train.steps"), "adv_train.steps")
        yield Static("Training", classes="form-section")
        yield FormRow("epochs", _input("epochs"), "epochs")
        yield FormRow("batch size", _input("batch_size"), "batch_size")
        yield FormRow("learning rate", _input("optimizer.lr"), "optimizer.lr")
        yield FormRow("eval eps", _input("eval.eps"), "eval.eps")
        yield FormRow("device", Select([], id="device", compact=True, prompt="auto",
                                       tooltip="where to train; auto picks cuda when available"), "device")
        yield Static("", id="form-error")
        with Horizontal(id="form-buttons"):
            yield Button("Launch ^l", id="launch", variant="primary", compact=True)
            yield Button("Save profile ^s", id="save", compact=True)

    # -- rows -----------------------------------------------------------------------------------
    @property
    def rows(self) -> dict[str, FormRow]:
        return {row.key: row for row in self.query(FormRow)}

    def control(self, key: str) -> Any:
        return self.rows[key].control

    @property
    def device(self) -> str:
        return self.rows["device"].value or "auto"

    # -- filling --------------------------------------------------------------------------------
    async def load(self, catalog: Catalog) -> None:
        """The catalog arrived: fill the selects and start from "build your own"."""
        self.catalog = cat = catalog
        self.query_one("#profile", Select).set_options([(name, name) for name in cat.profiles])
        self.control("dataset").set_options(
            [(f"{d.name} ({d.channels}x{d.image_size}², {d.num_classes} classes)", d.name)
             for d in cat.datasets.values()])
        self.control("defense.name").set_options([(name, name) for name in cat.defenses])
        self.control("adv_train.attack").set_options([(a, a) for a in rf.FIELDS["adv_train.attack"].choices])
        device = self.query_one("#device", Select)
        device.set_options([(f"auto ({cat.auto_device})" if d == "auto" else d, d) for d in cat.devices])
        device.value = "auto"
        await self.fill(self.custom_base(), "custom")

    def custom_base(self) -> dict:
        """Where "build your own" starts: the smallest offline dataset and a model that fits it."""
        assert self.catalog is not None
        dataset = "digits" if "digits" in self.catalog.datasets else next(iter(self.catalog.datasets))
        models = self.catalog.models_for(dataset)
        return {"dataset": dataset, "model": "tiny" if "tiny" in models else (models or [""])[0]}

    async def fill(self, base: dict, name: str) -> None:
        """Show a profile dict in the form; it stays the base of the config the form builds."""
        assert self.catalog is not None
        # Mounting the defense's inputs yields to the event loop: a launch in between must not read a
        # half-filled form (the screen refuses while `filling`).
        self.filling = True
        try:
            self.base = base
            v = rf.form_values(base, name)
            self.control("name").value = rf.text_of(v["name"])
            choose(self.control("dataset"), v["dataset"])
            self._model_options(v["dataset"], v["model.name"])
            choose(self.control("adv_train.attack"), v["adv_train.attack"])
            for key in ("adv_train.eps", "adv_train.steps", "epochs", "batch_size", "optimizer.lr", "eval.eps"):
                self.control(key).value = rf.text_of(v[key])
            # The params first: the defense select's Changed then finds them built and keeps them.
            await self.query_one(DefenseParams).show(self.catalog.defenses.get(v["defense.name"]), v[rf.PARAMS])
            self._show_paper()
            choose(self.control("defense.name"), v["defense.name"])
        finally:
            self.filling = False
        self.post_message(self.Edited())

    def _model_options(self, dataset: Any, prefer: Any = None) -> None:
        """Only the architectures that fit the dataset; keeps the current one while it fits."""
        assert self.catalog is not None
        select = self.control("model.name")
        fitting = self.catalog.models_for(dataset)
        wanted = prefer if prefer is not None else self.rows["model.name"].value
        if options_of(select) != fitting:
            select.set_options([(m, m) for m in fitting])  # clears the value
        if wanted is not None and (wanted in fitting or prefer is not None):
            choose(select, wanted)  # a profile's model shows even when it does not fit; the check says why
        elif fitting:
            select.value = fitting[0]

    def _show_paper(self) -> None:
        info = self.query_one(DefenseParams).info
        self.query_one("#defense-paper", Static).update(info.paper if info else "")

    async def pick_profile(self, name: str | None) -> None:
        assert self.catalog is not None
        if name is None:
            await self.fill(self.custom_base(), "custom")
            return
        try:
            data = read_yaml(self.catalog.profiles[name]) or {}
        except WorkbenchError as exc:
            self.notify(str(exc), severity="error", markup=False)
            return
        if not isinstance(data, dict):
            self.notify(f"profile {name} is not a mapping", severity="error", markup=False)
            return
        await self.fill(data, name)

    # -- edits ----------------------------------------------------------------------------------
    async def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if self.catalog is None:
            return
        value = None if event.value is Select.NULL else event.value
        sid = event.select.id
        if sid == "profile":
            await self.pick_profile(value)
            return  # fill() posts Edited
        if sid == "f-dataset":
            self._model_options(value)
        elif sid == "f-defense-name":
            params = self.query_one(DefenseParams)
            if params.info is None or params.info.name != value:
                await params.show(self.catalog.defenses.get(value))  # the new defense's schema defaults
                self._show_paper()
        self.post_message(self.Edited())

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self.catalog is not None:
            self.post_message(self.Edited())

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.stop()
        if self.catalog is not None:
            self.post_message(self.Edited())

    # -- reading back ---------------------------------------------------------------------------
    def collect(self) -> tuple[dict[str, Any], dict[str, str]]:
        """Typed field values and per-field errors."""
        params = self.query_one(DefenseParams)
        raw = {key: row.value for key, row in self.rows.items() if key in rf.FIELDS}
        raw[rf.PARAMS] = params.raw()
        return rf.parse_fields(raw, params.info)

    def build(self, values: dict[str, Any]) -> dict:
        return rf.build_config(self.base, values, self.query_one(DefenseParams).info)

    def config(self) -> dict:
        """The config dict the form stands for; ValueError when a field does not parse."""
        values, errors = self.collect()
        if errors:
            raise ValueError(errors)
        return self.build(values)

    def show_errors(self, errors: dict[str, str], problem: tuple[str, str] | None, ok_line: str) -> None:
        """Field errors at their fields; a whole-config problem at its field when the key has one, else in
        the error line (which says `ok_line` when there is nothing to fix)."""
        rows = self.rows
        errors = dict(errors)
        general = ""
        if problem is not None:
            key, msg = problem
            field = rf.field_for(key, set(rows)) if key else None
            if field is not None:
                errors[field] = msg if field == key else f"{key}: {msg}"
            else:
                general = f"{key}: {msg}" if key else msg
        for key, row in rows.items():
            row.set_error(errors.get(key))
        if general:
            self.set_line("[b red]✗[/] ", general)
        elif errors:
            self.set_line("[b red]✗[/] ", f"{len(errors)} field{'s' if len(errors) > 1 else ''} to fix")
        else:
            self.set_line(ok_line)

    def set_line(self, markup: str, text: str = "") -> None:
        """The status line under the fields: a markup prefix and plain text (messages hold brackets)."""
        self.query_one("#form-error", Static).update(Content.from_markup(markup) + Content(text))
