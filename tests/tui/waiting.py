"""Waiting in pilot tests: poll a condition with a generous deadline (CI machines are slow and shared)."""

from __future__ import annotations

import time
from typing import Callable


async def wait_until(pilot, condition: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> float:
    """Let the app run until `condition()` is true; returns the seconds it took. Fails after `timeout`."""
    start = time.monotonic()
    while True:
        if condition():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await pilot.pause(0.05)


async def wait_until_settled(pilot, timeout: float = 20.0, quiet: float = 0.3) -> None:
    """Let the app run until what it draws stays the same for `quiet` seconds: a snapshot taken then does not
    catch a layout or a chart half-way (on a loaded machine a fixed pause can end before the last refresh).

    A focused input's cursor blinks every 0.5 s, so it stops blinking first (and stays shown): otherwise the
    snapshot depends on the blink phase it was taken in."""
    from textual.widgets import Input

    for field in pilot.app.screen.query(Input):
        field.cursor_blink = False
    start = time.monotonic()
    before = pilot.app.export_screenshot()
    while True:
        await pilot.pause(quiet)
        now = pilot.app.export_screenshot()
        if now == before:
            return
        if time.monotonic() - start > timeout:
            raise AssertionError(f"the screen still changes after {timeout} s")
        before = now
