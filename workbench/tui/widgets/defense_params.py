"""The chosen defense's hyperparameters as inputs, pre-filled from its declared schema; rebuilt per defense."""

from __future__ import annotations

from typing import Any

from textual.containers import Vertical
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Select, Static

from ..model.catalog import DefenseInfo, ParamSpec
from ..model.run_form import PARAMS, text_of
from .form_row import FormRow
from .spec_validator import SpecValidator


def param_control(spec: ParamSpec, value: Any) -> Widget:
    """bool -> Checkbox, a Literal -> Select, numbers and anything else -> an Input checked as you type."""
    tip = f"{spec.name}: {spec.description or 'no description'} (default {text_of(spec.default) or 'null'})"
    wid = f"p-{spec.name}"
    if spec.kind == "bool":
        return Checkbox(text_of(bool(value)), value=bool(value), id=wid, tooltip=tip, compact=True)
    if spec.kind == "choice":
        options = list(spec.choices)
        if value not in options and value is not None:
            options.append(value)  # shown as the profile wrote it; validation says what is wrong
        return Select([(c, c) for c in options], value=value if value in options else options[0],
                      allow_blank=False, id=wid, tooltip=tip, compact=True)
    placeholder = "null" if spec.optional else ""
    return Input(text_of(value), placeholder=placeholder, id=wid, tooltip=tip, compact=True,
                 validators=[SpecValidator(spec)])


class DefenseParams(Vertical):
    DEFAULT_CSS = """
    DefenseParams { height: auto; }
    DefenseParams .params-none { color: $text-muted; padding-left: 18; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.info: DefenseInfo | None = None

    async def show(self, info: DefenseInfo | None, values: dict[str, Any] | None = None) -> None:
        """Replace the inputs by those of `info`, filled from `values` (schema defaults where missing)."""
        await self.remove_children()
        self.info = info
        if info is None:
            return
        values = {**info.defaults(), **(values or {})}
        rows: list[Widget] = [FormRow(p.name, param_control(p, values.get(p.name)), f"{PARAMS}.{p.name}")
                              for p in info.params]
        if not rows:
            rows = [Static("no hyperparameters", classes="params-none")]
        await self.mount_all(rows)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        event.checkbox.label = text_of(event.value)  # the value as a profile writes it

    @property
    def rows(self) -> dict[str, FormRow]:
        return {row.key: row for row in self.query(FormRow)}

    def raw(self) -> dict[str, Any]:
        """Raw control values by parameter name (parsed by run_form.parse_fields)."""
        return {row.key.removeprefix(PARAMS + "."): row.value for row in self.query(FormRow)}
