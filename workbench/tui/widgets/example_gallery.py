"""Clean / adversarial / amplified-perturbation images of one attack and eps, with predictions."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text
from textual.widget import Widget

from ..model.examples_view import FILTERS, Example, amplified_perturbation, group_label, groups, select
from .image_grid import image_row

TITLES = ("clean", "adversarial", "perturbation")


class ExampleGallery(Widget):
    """Shows the examples of the selected (protocol, attack, eps) group; `step(±1)` changes the group,
    `cycle_filter()` shows all (fooled first), only the fooled or only the robust ones.

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
        self.filter = FILTERS[0]
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

    def cycle_filter(self) -> str:
        self.filter = FILTERS[(FILTERS.index(self.filter) + 1) % len(FILTERS)]
        self.refresh(layout=True)
        return self.filter

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
        return select(self._group(), self.filter)

    def _group(self) -> list[Example]:
        return [e for e in self.examples if e.group == self.groups[self.index]]

    def _scale(self, example: Example) -> int:
        width = max(len(example.clean[0]) if example.clean else 1, 1)
        room = max(self.size.width - 2, 0) - 2 * (len(TITLES) - 1)
        return max(1, min(4, room // (len(TITLES) * width)))

    def render(self) -> RenderableType:
        if not self.groups:
            return Text(self.message, style="dim")
        group = self._group()
        fooled = sum(e.fooled for e in group)
        header = Text.assemble(("[ ", "dim"), (self.current_label, "bold"),
                               (f"  {self.index + 1}/{len(self.groups)} ]  ", "dim"),
                               (f"fooled {fooled}/{len(group)}", "bold red" if fooled else "green"),
                               (f" · showing {self.filter} · f filter · [ and ] switch", "dim"))
        parts: list[RenderableType] = [header]
        shown = self.shown
        if not shown:
            parts.append(Text(f"no {self.filter} examples in this group (f shows the others)", style="dim"))
        for i, ex in enumerate(shown):
            caption = Text(ex.caption(), style="bold red" if ex.fooled else "green", overflow="ellipsis")
            images = [ex.clean, ex.adversarial, amplified_perturbation(ex.clean, ex.adversarial)]
            scale = self._scale(ex)
            # One width per column on every row: the first row's titles must not push its images right.
            side = max(len(ex.clean[0]) if ex.clean else 0, 1) * scale
            widths = [max(side, len(t)) for t in TITLES]
            parts.append(image_row(images, TITLES if i == 0 else (), caption, scale=scale, widths=widths))
        return Group(*parts)
