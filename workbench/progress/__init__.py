"""Evaluation progress: the events the engine emits and their rendering on stderr (torch-free)."""

from .display import Hooks, LiveLine, PlainLines, open_display
from .event import EvalProgress, ProgressHook, describe, duration, eta_seconds
from .timing import ProgressClock

__all__ = ["EvalProgress", "Hooks", "LiveLine", "PlainLines", "ProgressClock", "ProgressHook", "describe", "duration",
           "eta_seconds", "open_display"]
