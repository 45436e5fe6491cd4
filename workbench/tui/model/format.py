"""Short, fixed-width renderings of numbers and times for tables."""

from __future__ import annotations


def pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}%"


def duration(seconds: float | None) -> str:
    """12s, 4m05s, 3h12m, 2d4h."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600}h"


def compact_duration(seconds: float | None) -> str:
    """At most 5 characters, so a narrow column never cuts it: 45s, 42m, 3h05m, 23h, 2d, >999d."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "-"
    s = int(seconds)  # floor: 59.7 s is not yet a minute
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 10 * 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d" if s < 1000 * 86400 else ">999d"


def since(then: float | None, now: float) -> str:
    """The compact time from `then` to `now` ("-" when unknown; a clock ahead of `now` reads 0s)."""
    if not then:
        return "-"
    return compact_duration(max(0.0, now - then))


def age(then: float | None, now: float) -> str:
    if not then:
        return "-"
    return duration(max(0.0, now - then)) + " ago"


STATE_STYLES = {
    "running": "bold green", "starting": "green", "finished": "cyan", "failed": "bold red",
    "stopped": "yellow", "stale": "magenta", "unknown": "dim", "crashed": "bold red",
    "cancelled": "yellow",  # the user's choice, not an error
}


def state_markup(state: str) -> str:
    # The state comes from a file another process wrote: escape it, so "[/x]" is text, not markup.
    safe = str(state).replace("\\", "\\\\").replace("[", "\\[")
    return f"[{STATE_STYLES.get(state, 'dim')}]{safe}[/]"
