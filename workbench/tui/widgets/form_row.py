"""One labelled form field: label and control on a line, its one-line error under it (hidden when none)."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Checkbox, Input, Label, Select, Static

LABEL_WIDTH = 18


class FormRow(Vertical):
    DEFAULT_CSS = f"""
    FormRow {{ height: auto; }}
    FormRow > .form-line {{ height: auto; }}
    FormRow .form-label {{ width: {LABEL_WIDTH}; color: $text-muted; }}
    FormRow .form-control {{ width: 1fr; }}
    FormRow Checkbox.form-control {{ width: auto; }}
    FormRow .form-error {{ display: none; color: $error; padding-left: {LABEL_WIDTH}; }}
    FormRow.-invalid .form-error {{ display: block; }}
    FormRow.-invalid .form-label {{ color: $error; }}
    """

    def __init__(self, label: str, control: Widget, key: str) -> None:
        super().__init__()
        self.key = key  # the config key it edits, e.g. "optimizer.lr" or "defense.params.tau"
        self.label = label
        self.control = control
        control.add_class("form-control")

    def compose(self) -> ComposeResult:
        with Horizontal(classes="form-line"):
            yield Label(self.label, classes="form-label")
            yield self.control
        yield Static("", classes="form-error", markup=False)

    def set_error(self, message: str | None) -> None:
        self.set_class(bool(message), "-invalid")
        self.query_one(".form-error", Static).update(message or "")

    @property
    def error(self) -> str:
        return str(self.query_one(".form-error", Static).render()) if self.has_class("-invalid") else ""

    @property
    def value(self) -> Any:
        """The control's raw value: text of an Input, bool of a Checkbox, the chosen option (None: blank)."""
        c = self.control
        if isinstance(c, Input):
            return c.value
        if isinstance(c, Checkbox):
            return c.value
        if isinstance(c, Select):
            return None if c.value is Select.NULL else c.value
        raise TypeError(f"unsupported control {type(c).__name__}")
