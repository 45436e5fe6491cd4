"""Small images drawn in the terminal: one cell holds two pixels as "▀" (fg = upper, bg = lower).

Images are plain nested lists (no torch, no numpy): `pixels[y][x]` is a float in [0, 1]
(grayscale) or an (r, g, b) triple of floats. Rich renderables, so a Static can show them.
"""

from __future__ import annotations

from typing import Sequence, Union

from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text

Pixel = Union[float, Sequence[float]]
Pixels = Sequence[Sequence[Pixel]]
UPPER_HALF = "▀"


def _byte(v: float) -> int:
    v = 0.0 if v != v else v  # NaN -> black
    return max(0, min(255, int(round(float(v) * 255))))


def pixel_color(p: Pixel) -> Color:
    if isinstance(p, (int, float)):
        g = _byte(p)
        return Color.from_rgb(g, g, g)
    r, g, b = (_byte(c) for c in list(p)[:3])
    return Color.from_rgb(r, g, b)


def upscale(pixels: Pixels, scale: int) -> list[list[Pixel]]:
    """Nearest-neighbour enlargement (an 8x8 digit is 8 cells wide at scale 1: too small to read)."""
    if scale <= 1:
        return [list(row) for row in pixels]
    return [[p for p in row for _ in range(scale)] for row in pixels for _ in range(scale)]


class HalfBlockImage:
    """An image as ceil(H/2) lines of W cells; an odd last row leaves the lower half unpainted."""

    def __init__(self, pixels: Pixels, scale: int = 1) -> None:
        self.pixels = upscale(pixels, max(1, int(scale)))
        self.height = len(self.pixels)
        self.width = max((len(row) for row in self.pixels), default=0)

    def cells(self) -> list[list[tuple[Color, Color | None]]]:
        """(foreground, background) per cell, line by line: what the terminal will show."""
        lines = []
        for y in range(0, self.height, 2):
            upper = self.pixels[y]
            lower = self.pixels[y + 1] if y + 1 < self.height else None
            lines.append([(pixel_color(upper[x]), pixel_color(lower[x]) if lower is not None else None)
                          for x in range(len(upper))])
        return lines

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.cells():
            for fg, bg in line:
                yield Segment(UPPER_HALF, Style(color=fg, bgcolor=bg))
            yield Segment.line()

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(self.width, self.width)


def image_row(images: Sequence[Pixels], titles: Sequence[str] = (), caption: Text | str = "", *, scale: int = 1,
              gap: int = 2, widths: Sequence[int] = ()) -> Table:
    """Images side by side, each under a short title, with a caption line below them all.

    `widths`: each column's width; rows stacked with the same widths line up whether or not they have titles."""
    grid = Table.grid(padding=(0, gap, 0, 0))
    for i, _ in enumerate(images):
        width = widths[i] if i < len(widths) else None
        grid.add_column(no_wrap=True, min_width=width, max_width=width)
    if titles:
        grid.add_row(*(Text(t, style="dim", overflow="ellipsis", no_wrap=True) for t in titles))
    grid.add_row(*(HalfBlockImage(img, scale) for img in images))
    outer = Table.grid()
    outer.add_column()
    outer.add_row(grid)
    if caption:
        outer.add_row(caption if isinstance(caption, Text) else Text(caption))
    return outer
