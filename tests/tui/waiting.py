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
