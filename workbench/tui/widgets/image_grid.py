"""Small images drawn in the terminal: one cell holds two pixels as "▀" (fg = upper, bg = lower).

Images are plain nested lists (no torch, no numpy): `pixels[y][x]` is a float in [0, 1]
(grayscale) or an (r, g, b) triple of floats. Rich renderables, so a Static can show them.

Where the terminal draws real graphics (Kitty's protocol or Sixel) and the optional `textual-image`
package is installed (`pip install workbench[graphics]`), `image_strip` (the zoomed view) draws with it
instead; see `probe_graphics`. Everywhere else, and always in tests and snapshots, half blocks.
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence, Union

from rich.color import Color
from rich.console import Console, ConsoleOptions, RenderableType, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widget import Widget
from textual.widgets import Static

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


def resize(pixels: Pixels, width: int, height: int) -> list[list[Pixel]]:
    """Nearest-neighbour resampling to `width` x `height` (shrinks what even scale 1 cannot fit)."""
    h, w = len(pixels), len(pixels[0]) if pixels else 0
    if not (h and w):
        return []
    return [[pixels[y * h // height][x * w // width] for x in range(width)] for y in range(height)]


def fit(pixels: Pixels, width: int, height: int) -> list[list[Pixel]]:
    """The largest copy of `pixels` within `width` x `height` pixels keeping its shape: an integer enlargement
    (every source pixel the same size: a digit's strokes stay even), else nearest-neighbour shrinking."""
    h, w = len(pixels), len(pixels[0]) if pixels else 0
    if not (h and w):
        return []
    ratio = min(width / w, height / h)
    if ratio >= 1:
        return upscale(pixels, int(ratio))
    return resize(pixels, max(1, int(w * ratio)), max(1, int(h * ratio)))


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


# -- a titled strip of images that fills its widget (the zoomed view) ----------------------------
class HalfBlockStrip(Widget):
    """Images side by side under their titles, as large as the widget allows, in half blocks."""

    DEFAULT_CSS = "HalfBlockStrip { height: 1fr; content-align: center middle; }"

    def __init__(self, titles: Sequence[str], *, gap: int = 2, id: str | None = None) -> None:
        super().__init__(id=id)
        self.titles = list(titles)
        self.gap = gap
        self.images: list[Pixels] = []

    def show(self, images: Sequence[Pixels], titles: Sequence[str] = ()) -> None:
        self.images = list(images)
        self.titles = list(titles) or self.titles
        self.refresh()

    def fitted(self) -> list[list[list[Pixel]]]:
        """The images at the size drawn: one column each, a title line above, two pixel rows a line."""
        n = max(len(self.images), 1)
        width = (self.size.width - self.gap * (n - 1)) // n
        return [fit(img, max(width, 1), 2 * max(self.size.height - 1, 1)) for img in self.images]

    def render(self) -> RenderableType:
        if not self.images:
            return ""
        fitted = self.fitted()
        side = max((len(img[0]) for img in fitted if img), default=1)
        widths = [max(side, len(t)) for t in self.titles]
        return image_row(fitted, self.titles, gap=self.gap, widths=widths)


class GraphicsStrip(Horizontal):
    """The same strip drawn by textual-image (Kitty graphics or Sixel): real pixels in each cell."""

    DEFAULT_CSS = """
    GraphicsStrip { height: 1fr; }
    GraphicsStrip .strip-panel { width: 1fr; height: 1fr; margin-right: 2; }
    GraphicsStrip .strip-panel:last-of-type { margin-right: 0; }
    GraphicsStrip .strip-title { height: 1; color: $text-muted; }
    GraphicsStrip .strip-image { width: auto; height: auto; }
    """

    def __init__(self, titles: Sequence[str], image_widget: type, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.titles = list(titles)
        self.image_widget = image_widget

    def compose(self) -> ComposeResult:
        for title in self.titles:
            with Vertical(classes="strip-panel"):
                yield Static(title, classes="strip-title")
                yield self.image_widget(classes="strip-image")

    def show(self, images: Sequence[Pixels], titles: Sequence[str] = ()) -> None:
        for widget, img in zip(self.query(".strip-image"), images):
            widget.image = to_pil(img)
        for label, title in zip(self.query(".strip-title").results(Static), titles):
            label.update(title)


def to_pil(pixels: Pixels, min_side: int = 512) -> Any:
    """A PIL image for textual-image, enlarged by whole pixels first: it resizes smoothly, which would blur
    an 8x8 digit into a smudge."""
    from PIL import Image

    h, w = len(pixels), len(pixels[0])
    gray = isinstance(pixels[0][0], (int, float))
    data = bytes(_byte(v) for row in pixels for p in row for v in ((p,) if gray else list(p)[:3]))
    image = Image.frombytes("L" if gray else "RGB", (w, h), data)
    k = max(1, math.ceil(min_side / max(w, h)))
    return image.resize((w * k, h * k), Image.Resampling.NEAREST)


# -- real graphics: asked once, before the app starts ------------------------------------------
_graphics: dict[str, Any] = {}  # set by probe_graphics: {"protocol": "tgp" | "sixel", "widget": its widget class}
GRAPHICS_ENV = "WORKBENCH_GRAPHICS"  # "off": half blocks even where the terminal draws graphics


def probe_graphics(environ: dict[str, str] | None = None) -> str | None:
    """Ask the terminal whether it draws Kitty (TGP) or Sixel graphics; returns the protocol, or None.

    textual-image asks the terminal while it is imported, reading the answer from stdin, which it cannot
    do once Textual's input thread reads stdin: call this before the app runs (`run_tui`). Never called
    (tests, snapshots, a `run_test`), the images stay half blocks."""
    _graphics.clear()
    if (os.environ if environ is None else environ).get(GRAPHICS_ENV, "").lower() in ("off", "0", "no"):
        return None
    try:
        from textual_image import renderable, widget
    except Exception:  # noqa: BLE001 - not installed (the [graphics] extra), or no terminal to ask
        return None
    found = {renderable.TGPImage: ("tgp", widget.TGPImage),
             renderable.SixelImage: ("sixel", widget.SixelImage)}.get(renderable.Image)
    if found is not None:  # otherwise textual-image itself would fall back to half cells
        _graphics.update(protocol=found[0], widget=found[1])
    return graphics_protocol()


def graphics_protocol() -> str | None:
    return _graphics.get("protocol")


def image_strip(titles: Sequence[str], *, id: str | None = None) -> HalfBlockStrip | GraphicsStrip:
    """A strip of images in real graphics where `probe_graphics` found them, else in half blocks."""
    widget = _graphics.get("widget")
    return GraphicsStrip(titles, widget, id=id) if widget is not None else HalfBlockStrip(titles, id=id)
