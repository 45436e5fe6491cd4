"""One example enlarged: clean, adversarial and the amplified perturbation, with what the model said and
how large the change was. Opened from the gallery (enter or z on the selected example); escape closes.

The images fill the screen's width: half blocks, or real pixels where `probe_graphics` found Kitty or
Sixel graphics before the app started.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from ..model.examples_view import Example, amplification, amplified_perturbation, zoom_facts
from ..widgets.image_grid import image_strip

TITLES = ("clean", "adversarial", "perturbation")


def facts_table(example: Example) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    for name, value, style in zoom_facts(example):
        table.add_row(name, Text(value, style=style))
    return table


class ExampleZoom(ModalScreen[None]):
    """`examples`: the gallery's list as shown (its filter and order); left/right walk it."""

    BINDINGS = [
        Binding("escape", "dismiss", "Close"),
        Binding("z", "dismiss", "Close", show=False),
        Binding("left", "step(-1)", "Previous"),
        Binding("right", "step(1)", "Next"),
    ]

    DEFAULT_CSS = """
    ExampleZoom { align: center middle; }
    ExampleZoom #zoom-box {
        width: 100%; height: 100%; padding: 0 1;
        border: round $accent; border-title-style: bold; background: $surface;
    }
    ExampleZoom #zoom-facts { height: auto; }
    """

    def __init__(self, examples: list[Example], index: int = 0, group: str = "") -> None:
        super().__init__()
        self.examples = examples
        self.index = index % len(examples) if examples else 0
        self.group = group

    @property
    def example(self) -> Example:
        return self.examples[self.index]

    def compose(self) -> ComposeResult:
        with Vertical(id="zoom-box"):
            yield image_strip(TITLES, id="zoom-images")
            yield Static(id="zoom-facts")

    def on_mount(self) -> None:
        self.show_example()

    def show_example(self) -> None:
        ex = self.example
        box = self.query_one("#zoom-box")
        verdict = "fooled" if ex.fooled else "robust"
        box.border_title = f"{self.group} · #{ex.sample} {verdict} {ex.true} → {ex.adv_pred}".lstrip(" ·")
        box.border_subtitle = f"{self.index + 1}/{len(self.examples)} · ← → other examples · esc close"
        gain = amplification(ex)
        titles = (*TITLES[:2], f"{TITLES[2]} ×{gain:.3g}" if gain else TITLES[2])
        images = [ex.clean, ex.adversarial, amplified_perturbation(ex.clean, ex.adversarial)]
        self.query_one("#zoom-images").show(images, titles)
        self.query_one("#zoom-facts", Static).update(facts_table(ex))

    def action_step(self, delta: int) -> None:
        if len(self.examples) > 1:
            self.index = (self.index + delta) % len(self.examples)
            self.show_example()
