"""The attack panel's options column: checkpoint, attacks, eps, norm, n, preset, parameters.

Only collects text: `form()` returns an `AttackForm`, which `build_args` validates, and `set_form`
shows one (remembered, or a past evaluation's). The attacks and their parameters are the engine's
metadata (`set_catalog`, once the backend has sent it); a checked attack's parameter rows appear
under its name, so the column stays short at 80x24.
"""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from ...attack_meta import DEFAULT_ATTACK, AttackMeta, Param
from ..model.attack_form import DEFAULT_EXAMPLES, DEFAULT_N, DEVICES, HEADS, NORMS, PRESETS, AttackForm

NO_PRESET = "none"


class AttackOptions(VerticalScroll):
    """Scrolling column of compact one-line fields."""

    DEFAULT_CSS = """
    AttackOptions { width: 35%; min-width: 32; max-width: 64; height: 1fr; border-right: vkey $panel;
                    padding: 0 1 0 0; overflow-x: hidden; }
    AttackOptions .section { color: $accent; text-style: bold; margin-top: 1; }
    AttackOptions .field { height: 1; }
    AttackOptions .field Label { width: 11; color: $text-muted; }
    AttackOptions .field Input, AttackOptions .field Select { width: 1fr; }
    AttackOptions Checkbox { height: 1; border: none; padding: 0; }
    AttackOptions Checkbox:focus { border: none; }
    /* Checkbox's own hooks (.toggle--button, .-on): unchecked an empty box, checked a bold X on green. */
    AttackOptions Checkbox > .toggle--button { color: $panel; background: $panel; }
    AttackOptions Checkbox.-on > .toggle--button { color: $text; background: $success; text-style: bold; }
    AttackOptions #ckpt-select { margin-bottom: 0; }
    AttackOptions #run-button { margin-top: 1; width: 100%; }
    AttackOptions #hint { color: $text-muted; height: auto; margin-top: 1; }
    AttackOptions #atk-list, AttackOptions #params-list, AttackOptions .params { height: auto; }
    AttackOptions #atk-loading { color: $text-muted; }
    AttackOptions .params Static { color: $text-muted; text-style: italic; }
    """

    class CheckpointChanged(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    def __init__(self, checkpoints: list[Path], path: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.checkpoints = checkpoints
        self.initial_path = path
        self.catalog: dict[str, AttackMeta] = {}  # filled by `set_catalog`
        self.presets = dict(PRESETS)
        # The preset the strong box was last set for: a preset chosen by hand sets it, one set with a form not.
        self._strong_for = NO_PRESET

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
        yield Vertical(Static("loading the attacks…", id="atk-loading"), id="atk-list")
        yield Static("evaluation", classes="section")
        yield self._field("eps", Input(placeholder="default (per data)", id="eps", compact=True))
        yield self._field("norm", Select([(n, n) for n in NORMS], value="linf", allow_blank=False, id="norm",
                                         compact=True))
        yield self._field("samples n", Input(DEFAULT_N, placeholder="all", id="n", compact=True))
        yield self._field("preset", Select([(NO_PRESET, NO_PRESET)] + [(p, p) for p in PRESETS], value=NO_PRESET,
                                           allow_blank=False, id="preset", compact=True))
        yield Checkbox("strong protocol", id="strong", compact=True)
        yield Checkbox("adaptive attacks", id="adaptive", compact=True)
        yield self._field("head", Select([(h, h) for h in HEADS], value="softmax", allow_blank=False, id="head",
                                         compact=True))
        yield self._field("examples", Input(DEFAULT_EXAMPLES, placeholder="0", id="save-examples", compact=True))
        yield self._field("device", Select([(d, d) for d in DEVICES], value="auto", allow_blank=False, id="device",
                                           compact=True))
        yield Static("parameters (blank: default)", classes="section", id="params-title")
        yield Vertical(id="params-list")
        yield Button("Run evaluation (^r)", id="run-button", variant="primary", compact=True)
        yield Static("", id="hint")

    def on_mount(self) -> None:
        self._show_params()

    # -- the catalog -------------------------------------------------------------------------
    async def set_catalog(self, catalog: tuple[AttackMeta, ...], presets: dict[str, str]) -> bool:
        """A checkbox per attack (PGD on, as `workbench attack` runs it when none is named) and a group of
        parameter rows per attack that has parameters. False when the panel closed meanwhile (nothing to fill)."""
        self.catalog = {m.name: m for m in catalog}
        self.presets = {**self.presets, **presets}
        titles = [m.title for m in catalog]
        boxes = []
        for m in catalog:
            # apgd with its default loss is titled like apgd_ce: the name tells them apart
            text = m.title if titles.count(m.title) == 1 else f"{m.title} ({m.name})"
            box = Checkbox(text, value=m.name == DEFAULT_ATTACK, id=f"atk-{m.name}", compact=True)
            box.tooltip = f"{m.summary} ({', '.join(m.norms)})"
            boxes.append(box)
        groups = [Vertical(Static(m.title), *(self._field(p.name, self._param_widget(m, p)) for p in m.params),
                           id=f"params-{m.name}", classes="params") for m in catalog if m.params]
        # The catalog may arrive as the app closes: each await can return to a widget whose mounts were undone.
        for step in (lambda: self.query_one("#atk-list").remove_children(),
                     lambda: self.query_one("#atk-list").mount_all(boxes),
                     lambda: self.query_one("#params-list").mount_all(groups)):
            if not self.is_attached:
                return False
            await step()
        if not self.is_attached:
            return False
        self._show_params()
        if self.screen.focused is not None:
            self._hint(self.screen.focused)
        return True

    def catalog_failed(self, reason: str) -> None:
        self.query_one("#atk-loading", Static).update(escape(f"cannot list the attacks: {reason}"))

    @staticmethod
    def _param_widget(m: AttackMeta, p: Param) -> Widget:
        wid = f"param-{m.name}-{p.name}"
        if p.choices or p.type is bool:
            options = p.choices or ("true", "false")
            return Select([(c, c) for c in options], id=wid, compact=True, prompt=f"default ({p.show()})")
        return Input(placeholder=p.show(), id=wid, compact=True)

    # -- reading the fields ------------------------------------------------------------------
    def checked(self) -> list[str]:
        return [name for name in self.catalog if self.query_one(f"#atk-{name}", Checkbox).value]

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
            attacks=self.checked(),
            params={m.name: {p.name: self.text(f"param-{m.name}-{p.name}") for p in m.params}
                    for m in self.catalog.values()},
            eps=self.text("eps"), norm=self.text("norm"), n=self.text("n"),
            preset="" if preset == NO_PRESET else preset, strong=self.query_one("#strong", Checkbox).value,
            head=self.text("head"), save_examples=self.text("save-examples"), device=self.text("device"),
            adaptive=self.query_one("#adaptive", Checkbox).value)

    # -- showing a form ----------------------------------------------------------------------
    def set_form(self, form: AttackForm) -> None:
        """Show `form` (fitted to the catalog: see `fit_to_catalog`); an attack's blank field is its default."""
        for name, meta in self.catalog.items():
            self.query_one(f"#atk-{name}", Checkbox).value = name in form.attacks
            for p in meta.params:
                self._set_text(f"param-{name}-{p.name}", form.params.get(name, {}).get(p.name, ""))
        self._strong_for = form.preset or NO_PRESET  # its Changed message must not reset the strong box
        for wid, text in (("eps", form.eps), ("norm", form.norm), ("n", form.n), ("preset", form.preset or NO_PRESET),
                          ("head", form.head), ("save-examples", form.save_examples), ("device", form.device)):
            self._set_text(wid, text)
        self.query_one("#strong", Checkbox).value = form.strong
        self.query_one("#adaptive", Checkbox).value = form.adaptive

    def _set_text(self, id: str, text: str) -> None:
        widget = self.query_one(f"#{id}")
        if isinstance(widget, Select):
            widget.value = text if text else Select.NULL  # an option always: the form was fitted to them
        else:
            widget.value = text

    def set_checkpoint(self, path: Path) -> None:
        """Point the form at `path`, in the list of the run's checkpoints too when it is one of them."""
        if str(path) in {str(p) for p in self.checkpoints}:
            self.query_one("#ckpt-select", Select).value = str(path)
        self.query_one("#ckpt-path", Input).value = str(path)

    # -- reactions ---------------------------------------------------------------------------
    def _show_params(self) -> None:
        checked = set(self.checked())
        for group in self.query(".params"):
            group.display = group.id.removeprefix("params-") in checked
        self.query_one("#params-title").display = any(self.catalog[name].params for name in checked)

    def on_checkbox_changed(self, event: Checkbox.Changed) -> None:
        self._show_params()

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "ckpt-select" and event.value is not Select.NULL:
            self.query_one("#ckpt-path", Input).value = str(event.value)
        elif event.select.id == "preset" and event.value != self._strong_for:
            # A paper preset runs the strong protocol beside it unless told not to (as the CLI does).
            self._strong_for = event.value
            self.query_one("#strong", Checkbox).value = event.value not in (NO_PRESET, "strong")
        self._hint(event.select)

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "ckpt-path":
            self.post_message(self.CheckpointChanged(event.value.strip()))

    def on_descendant_focus(self, event) -> None:
        self._hint(event.widget)

    def _hint(self, widget: Widget | None) -> None:
        wid = (widget.id or "") if widget is not None else ""
        parent = widget.parent if widget is not None else None
        if isinstance(parent, Select):  # the focusable part of a Select is inside it
            wid = parent.id or ""
        text = ""
        name, _, key = wid.removeprefix("param-").partition("-")
        if wid.startswith("atk-") and wid[4:] in self.catalog:
            m = self.catalog[wid[4:]]
            uses = ", ".join(p.name for p in m.params) or "no parameters"
            kind = "" if m.bounded else ", minimum norm"
            text = f"{m.title}: {m.summary}. Norms {'/'.join(m.norms)}{kind}; parameters: {uses}."
        elif wid.startswith("param-") and name in self.catalog and key in self.catalog[name].by_name:
            p = self.catalog[name].by_name[key]
            shared = f"; --{p.option.replace('_', '-')} sets it for every attack" if p.option else ""
            text = f"{self.catalog[name].title} {p.name}: {p.help} (default {p.show()}{shared})"
        elif wid == "preset":
            preset = self.text("preset")
            text = self.presets.get(preset, "no preset: only the checked attacks")
        elif wid == "eps":
            text = "comma-separated, e.g. 0.1,0.2,0.3 or 8/255; blank: the dataset's default"
        elif wid == "strong":
            text = "also run PGD-100x2 CE/CW + AutoAttack: what a robustness claim should survive"
        elif wid == "adaptive":
            text = "also attack the defense's own training loss (PGD-100x2, APGD-100); softmax head only"
        elif wid == "ckpt-path":
            text = "any checkpoint file (.pt); its evaluations go to evals/ beside it"
        self.query_one("#hint", Static).update(text)
