"""The attack panel's options column: checkpoint, attacks, eps, norm, n, preset, parameters.

Only collects text: `form()` returns an `AttackForm`, which `build_args` validates. Parameter rows
appear only for the checked attacks that read them, so the column stays short at 80x24.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from ..model.attack_form import (
    CATALOG, DEFAULT_EXAMPLES, DEFAULT_N, DEVICES, HEADS, NORMS, PARAMS, PRESETS, AttackForm, AttackInfo,
    relevant_params,
)

NO_PRESET = "none"


class AttackOptions(VerticalScroll):
    """Scrolling column of compact one-line fields."""

    DEFAULT_CSS = """
    AttackOptions { width: 32; height: 1fr; border-right: vkey $panel; padding: 0 1 0 0; overflow-x: hidden; }
    AttackOptions .section { color: $accent; text-style: bold; margin-top: 1; }
    AttackOptions .field { height: 1; }
    AttackOptions .field Label { width: 11; color: $text-muted; }
    AttackOptions .field Input, AttackOptions .field Select { width: 1fr; }
    AttackOptions Checkbox { height: 1; border: none; padding: 0; }
    AttackOptions Checkbox:focus { border: none; }
    AttackOptions #ckpt-select { margin-bottom: 0; }
    AttackOptions #run-button { margin-top: 1; width: 100%; }
    AttackOptions #hint { color: $text-muted; height: auto; margin-top: 1; }
    """

    class CheckpointChanged(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, checkpoints: list[Path], path: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.checkpoints = checkpoints
        self.initial_path = path
        self.catalog: dict[str, AttackInfo] = {a.name: a for a in CATALOG}
        self.presets = dict(PRESETS)

    @staticmethod
    def _field(label: str, widget: Widget, id: str | None = None) -> Horizontal:
        return Horizontal(Label(label), widget, classes="field", id=id)

    def compose(self) -> ComposeResult:
        yield Static("checkpoint", classes="section")
        if self.checkpoints:
            yield Select([(p.name, str(p)) for p in self.checkpoints], id="ckpt-select", compact=True,
                         allow_blank=False, value=self.initial_path if self.initial_path in
                         [str(p) for p in self.checkpoints] else str(self.checkpoints[0]))
        yield Input(self.initial_path, placeholder="path to a checkpoint .pt", id="ckpt-path", compact=True)
        yield Static("attacks", classes="section")
        for info in CATALOG:
            # PGD on by default, as `workbench attack` runs PGD when no attack is named.
            yield Checkbox(f"{info.label}", value=info.name == "pgd", id=f"atk-{info.name}", compact=True)
        yield Static("evaluation", classes="section")
        yield self._field("eps", Input(placeholder="default (per data)", id="eps", compact=True))
        yield self._field("norm", Select([(n, n) for n in NORMS], value="linf", allow_blank=False, id="norm",
                                         compact=True))
        yield self._field("samples n", Input(DEFAULT_N, placeholder="all", id="n", compact=True))
        yield self._field("preset", Select([(NO_PRESET, NO_PRESET)] + [(p, p) for p in PRESETS], value=NO_PRESET,
                                           allow_blank=False, id="preset", compact=True))
        yield Checkbox("strong protocol", id="strong", compact=True)
        yield self._field("head", Select([(h, h) for h in HEADS], value="softmax", allow_blank=False, id="head",
                                         compact=True))
        yield self._field("examples", Input(DEFAULT_EXAMPLES, placeholder="0", id="save-examples", compact=True))
        yield self._field("device", Select([(d, d) for d in DEVICES], value="auto", allow_blank=False, id="device",
                                           compact=True))
        yield Static("parameters (blank: default)", classes="section", id="params-title")
        for key, p in PARAMS.items():
            if p.kind == "choice":
                widget: Widget = Select([(c, c) for c in p.choices], id=f"param-{key}", compact=True,
                                        prompt="default")
            else:
                widget = Input(placeholder="default", id=f"param-{key}", compact=True)
            yield self._field(p.label, widget, id=f"row-{key}")
        yield Button("Run evaluation (^r)", id="run-button", variant="primary", compact=True)
        yield Static("", id="hint")

    def on_mount(self) -> None:
        self._show_params()

    # -- reading the fields ------------------------------------------------------------------
    def checked(self) -> list[str]:
        return [a.name for a in CATALOG if self.query_one(f"#atk-{a.name}", Checkbox).value]

    def text(self, id: str) -> str:
        widget = self.query_one(f"#{id}")
        if isinstance(widget, Select):
            return "" if widget.is_blank() else str(widget.value)
        return widget.value

    def checkpoint_text(self) -> str:
        return self.query_one("#ckpt-path", Input).value.strip()

    def form(self) -> AttackForm:
        preset = self.text("preset")
        return AttackForm(
            attacks=self.checked(), params={key: self.text(f"param-{key}") for key in PARAMS},
            eps=self.text("eps"), norm=self.text("norm"), n=self.text("n"),
            preset="" if preset == NO_PRESET else preset, strong=self.query_one("#strong", Checkbox).value,
            head=self.text("head"), save_examples=self.text("save-examples"), device=self.text("device"))

    # -- reactions ---------------------------------------------------------------------------
    def _show_params(self) -> None:
        shown = set(relevant_params(self.checked()))
        for key in PARAMS:
            self.query_one(f"#row-{key}").display = key in shown
        self.query_one("#params-title").display = bool(shown)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._show_params()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "ckpt-select" and event.value is not Select.NULL:
            self.query_one("#ckpt-path", Input).value = str(event.value)
        elif event.select.id == "preset":
            # A paper preset runs the strong protocol beside it unless told not to (as the CLI does).
            self.query_one("#strong", Checkbox).value = event.value not in (NO_PRESET, "strong")
        self._hint(event.select)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "ckpt-path":
            self.post_message(self.CheckpointChanged(event.value.strip()))

    def on_descendant_focus(self, event) -> None:
        self._hint(event.widget)

    def set_catalog(self, catalog: tuple[AttackInfo, ...], presets: dict[str, str]) -> None:
        """The engine's own descriptions, once loaded (a worker imports the attacks)."""
        self.catalog = {a.name: a for a in catalog}
        self.presets = {**self.presets, **presets}
        for info in catalog:
            box = self.query_one(f"#atk-{info.name}", Checkbox)
            box.tooltip = f"{info.description} ({', '.join(info.norms)})"
        if self.screen.focused is not None:
            self._hint(self.screen.focused)

    def _hint(self, widget: Widget | None) -> None:
        wid = (widget.id or "") if widget is not None else ""
        parent = widget.parent if widget is not None else None
        if isinstance(parent, Select):  # the focusable part of a Select is inside it
            wid = parent.id or ""
        text = ""
        if wid.startswith("atk-") and wid[4:] in self.catalog:
            info = self.catalog[wid[4:]]
            uses = ", ".join(PARAMS[k].label for k in info.params) or "no parameters"
            text = f"{info.label}: {info.description}. Norms {'/'.join(info.norms)}; uses {uses}."
        elif wid.startswith("param-") and wid[6:] in PARAMS:
            text = PARAMS[wid[6:]].help
        elif wid == "preset":
            preset = self.text("preset")
            text = self.presets.get(preset, "no preset: only the checked attacks")
        elif wid == "eps":
            text = "comma-separated, e.g. 0.1,0.2,0.3 or 8/255; blank: the dataset's default"
        elif wid == "strong":
            text = "also run PGD-100x2 CE/CW + AutoAttack: what a robustness claim should survive"
        elif wid == "ckpt-path":
            text = "any checkpoint file (.pt); its evaluations go to evals/ beside it"
        self.query_one("#hint", Static).update(text)
