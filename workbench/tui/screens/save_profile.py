"""Asks where to save the form as a profile YAML; dismisses with the path text, or None."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static


class SaveProfileScreen(ModalScreen[str | None]):
    DEFAULT_CSS = """
    SaveProfileScreen { align: center middle; }
    #save-box { width: 64; max-width: 100%; height: auto; border: round $accent; padding: 1 2; background: $surface; }
    #save-hint { color: $text-muted; }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: str) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="save-box"):
            yield Static("Save the form as a profile YAML:")
            yield Input(self.default, id="save-path")
            yield Static("enter: save · escape: cancel", id="save-hint")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        path = event.value.strip()
        if not path:
            self.notify("give a file path", severity="warning")
            return
        self.dismiss(path)

    def action_cancel(self) -> None:
        self.dismiss(None)
