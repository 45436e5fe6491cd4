"""Round axis ticks for terminal charts (pure: no textual, no plotext).

plotext spreads its ticks evenly between the data's ends (1.0, 4.5, 8.0 ... epochs; 1.00, 0.83,
0.67 ...). A reader wants whole epochs and round values: steps of 1, 2 or 5 times a power of ten.
"""

from __future__ import annotations

import math

Ticks = tuple[list[float], list[str]]


def nice_step(span: float, most: int) -> float:
    """The smallest step of 1, 2, 2.5 or 5 × 10^k that cuts `span` into at most `most` intervals."""
    most = max(1, most)
    if not span > 0 or not math.isfinite(span):
        return 1.0
    raw = span / most
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in (1.0, 2.0, 2.5, 5.0, 10.0):
        if factor * power >= raw * (1 - 1e-9):
            return factor * power
    return 10.0 * power


def _label(value: float, step: float) -> str:
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e5:
        return f"{value:.2g}".replace("e-0", "e-").replace("e+0", "e")
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else 0
    if step < 1 and round(step * 10 ** decimals) != step * 10 ** decimals:  # a step of 0.25
        decimals += 1
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def value_ticks(lo: float, hi: float, most: int) -> tuple[tuple[float, float], list[float], list[str]]:
    """An axis range around the data [lo, hi] (5 % spare each side) and round ticks inside it:
    at most `most` + 1, on multiples of a 1/2/2.5/5 × 10^k step."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return (0.0, 1.0), [], []
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    spare = (hi - lo) * 0.05
    lo, hi = lo - spare if lo - spare >= 0 or lo < 0 else 0.0, hi + spare  # a loss axis stops at 0
    step = nice_step(hi - lo, most)
    first = math.ceil(lo / step - 1e-9)
    values = [k * step for k in range(first, math.floor(hi / step + 1e-9) + 1)]
    values = [0.0 if abs(v) < step * 1e-9 else v for v in values]
    return (lo, hi), values, [_label(v, step) for v in values]


def percent_ticks(most: int) -> Ticks:
    """0 %..100 % for a fraction axis in steps of 25 (or 50, or 100 when there is less room)."""
    step = 25 if most >= 4 else 50 if most >= 2 else 100
    values = list(range(0, 101, step))
    return [v / 100 for v in values], [f"{v}%" for v in values]


def integer_ticks(lo: float, hi: float, most: int) -> Ticks:
    """Whole-number ticks (epochs) from lo to hi, at most `most` + 1, in steps of 1, 2, 5, 10, ..."""
    lo_i, hi_i = math.floor(lo), math.ceil(hi)
    if hi_i <= lo_i:
        return [float(lo_i)], [str(lo_i)]
    raw = nice_step(hi_i - lo_i, most)
    step = 5 if raw == 2.5 else max(1, int(round(raw)))  # 2.5 is no whole step
    # Multiples of the step, plus the first epoch: 1, 5, 10, 15 rather than 1, 6, 11.
    values = [v for v in range(math.ceil(lo_i / step) * step, hi_i + 1, step)]
    if not values or values[0] != lo_i:
        if values and values[0] - lo_i <= step / 2:
            values = values[1:]
        values.insert(0, lo_i)
    return [float(v) for v in values], [str(v) for v in values]
