"""Clean / adversarial / amplified-perturbation images of one attack and eps, with predictions."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.widget import Widget

from ..model.examples_view import Example, amplified_perturbation, group_label, groups
from .image_grid import image_row

TITLES = ("clean", "adversarial", "perturbation")


class ExampleGallery(Widget):
    """Shows the examples of the selected (protocol, attack, eps) group; `step(±1)` changes the group.

    The image scale follows the widget's width, so 8x8 digits are legible on a wide terminal and
    three of them still fit side by side at 80 columns.
    """

    DEFAULT_CSS = """
    ExampleGallery { height: auto; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.examples: list[Example] = []
        self.groups: list[tuple] = []
        self.index = 0
        self.message = "no examples (run with save examples > 0)"

    def set_examples(self, examples: list[Example], message: str = "") -> None:
        self.examples = examples
        self.groups = groups(examples)
        self.index = 0
        self.message = message or ("no examples in this evaluation (save examples was 0)" if not examples else "")
        self.refresh(layout=True)

    def step(self, delta: int) -> None:
        if self.groups:
            self.index = (self.index + delta) % len(self.groups)
            self.refresh(layout=True)

    @property
    def current_label(self) -> str:
        if not self.groups:
            return ""
        several = len({g[0] for g in self.groups}) > 1
        return group_label(self.groups[self.index], several)

    @property
    def shown(self) -> list[Example]:
        if not self.groups:
            return []
        return [e for e in self.examples if e.group == self.groups[self.index]]

    def _scale(self, example: Example) -> int:
        width = max(len(example.clean[0]) if example.clean else 1, 1)
        room = max(self.size.width - 2, 0) - 2 * (len(TITLES) - 1)
        return max(1, min(4, room // (len(TITLES) * width)))

    def render(self) -> RenderableType:
        if not self.groups:
            return Text(self.message, style="dim")
        header = Text.assemble(("[ ", "dim"), (self.current_label, "bold"),
                               (f"  {self.index + 1}/{len(self.groups)} ]  ", "dim"), ("[ and ] switch", "dim"))
        parts: list[RenderableType] = [header]
        for i, ex in enumerate(self.shown):
            caption = Text(ex.caption(), style="bold red" if ex.fooled else "green", overflow="ellipsis")
            images = [ex.clean, ex.adversarial, amplified_perturbation(ex.clean, ex.adversarial)]
            parts.append(image_row(images, TITLES if i == 0 else (), caption, scale=self._scale(ex)))
        return Group(*parts)
