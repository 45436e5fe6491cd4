"""The Run monitor's charts: loss per epoch, clean and robust accuracy per epoch, loss per step."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Grid

from ..model.history import History, Series, downsample
from .line_chart import LineChart

# A braille cell is two dots wide: more points than that per cell draw nothing new, and plotext
# pays for every point (0.4 s for the 50k steps of a long run, on the UI thread).
POINTS_PER_CELL = 2
WIDTH_BEFORE_LAYOUT = 100  # cells, until the chart has a size


class RunCharts(Grid):
    """Epoch charts side by side on top, the (longer) per-step loss across the bottom."""

    DEFAULT_CSS = """
    RunCharts { grid-size: 2 2; grid-rows: 1fr 1fr; grid-columns: 1fr 1fr; height: 1fr; }
    RunCharts > #chart-steps { column-span: 2; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._history: History | None = None
        self._widths: tuple[int, ...] = ()

    def compose(self) -> ComposeResult:
        yield LineChart("accuracy per epoch", "epoch", ylim=(0.0, 1.0), id="chart-accuracy")
        yield LineChart("train loss per epoch", "epoch", id="chart-loss")
        yield LineChart("train loss per step", "step", id="chart-steps")

    def show(self, history: History) -> None:
        """Redraw all three from the history (one repaint per chart)."""
        self._history = history
        self._draw()

    def on_resize(self) -> None:
        # A wider chart can show more of a long series: downsample again for the new width.
        if self._history is not None and self._chart_widths() != self._widths:
            self._draw()

    def _chart_widths(self) -> tuple[int, ...]:
        return tuple(chart.size.width for chart in self.query(LineChart))

    def _draw(self) -> None:
        history = self._history
        assert history is not None
        self._widths = self._chart_widths()
        self._set("#chart-accuracy", {
            "clean": history.epoch_series("test_clean_acc"),
            "robust": history.epoch_series("test_robust_acc"),
        })
        # The lowest loss goes in the legend: the status line has no room left at 80 columns.
        lowest = history.lowest("train_loss")
        loss_name = "train" if lowest is None else f"train · min {lowest.value:.3g} (ep {lowest.epoch})"
        self._set("#chart-loss", {loss_name: history.epoch_series("train_loss")})
        self._set("#chart-steps", {"train": history.step_series("train_loss")})

    def _set(self, selector: str, series: dict[str, Series]) -> None:
        chart = self.query_one(selector, LineChart)
        points = POINTS_PER_CELL * (chart.size.width or WIDTH_BEFORE_LAYOUT)
        chart.set_series({name: downsample(xs, ys, points) for name, (xs, ys) in series.items()})

    @property
    def points(self) -> int:
        return sum(chart.points for chart in self.query(LineChart))
