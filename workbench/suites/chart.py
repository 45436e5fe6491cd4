"""One chart per suite: robust accuracy vs eps per model, in the terminal (plotext) or as a PNG (matplotlib).

Each model's curve is, per seed, the worst case over every attack at each eps (the strongest honest
number), averaged over its seeds."""

from __future__ import annotations

from pathlib import Path

from ..errors import WorkbenchError
from .table import SuiteTable

Series = dict[str, list[tuple[float, float]]]  # model -> [(eps, robust accuracy %)]


def chart_series(table: SuiteTable) -> Series:
    """Per model and eps: each seed's worst case over every metric at that eps, averaged over the seeds."""
    series: Series = {}
    for model in table.models:
        worst: dict[float, dict[int, float]] = {}  # eps -> seed -> lowest robust accuracy
        for metric in table.metrics:
            cell = table.cell(model, metric.name)
            if metric.eps is None or cell is None:
                continue
            per_seed = worst.setdefault(metric.eps, {})
            for seed, value in zip(cell.seeds, cell.values):
                per_seed[seed] = min(per_seed.get(seed, 1.0), value)
        points = [(eps, 100 * sum(v.values()) / len(v)) for eps, v in sorted(worst.items()) if v]
        if points:
            series[model] = points
    return series


def terminal_chart(series: Series, title: str, width: int, height: int, colour: bool = True) -> str:
    import plotext as plt

    plt.clear_figure()
    plt.plotsize(width, height)
    plt.theme("clear")
    for model, points in series.items():
        xs, ys = zip(*points)
        plt.plot(list(xs), list(ys), label=model, marker="dot")
    plt.ylim(0, 100)
    plt.title(title)
    plt.xlabel("eps")
    plt.ylabel("robust %")
    text = plt.build()
    return text if colour else plt.uncolorize(text)


def save_png(series: Series, title: str, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display needed
        import matplotlib.pyplot as mpl
    except ImportError:
        raise WorkbenchError("--png needs matplotlib: pip install 'workbench[plot]'") from None
    fig, ax = mpl.subplots(figsize=(6, 4), dpi=120)
    for model, points in series.items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=model)
    ax.set(title=title, xlabel="eps", ylabel="robust accuracy (%)", ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp)
    mpl.close(fig)
    tmp.replace(path)  # a reader never sees half a PNG
