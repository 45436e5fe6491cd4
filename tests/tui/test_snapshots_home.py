"""Snapshots of the home screen, the help screen and the command palette (fixed runs, fixed clock)."""

from __future__ import annotations

from workbench.tui.app import WorkbenchApp

from .fixed_runs import FIXED_NOW


def test_runs_screen_snapshot(fixed_runs, snap_compare):
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=(100, 24))


def test_runs_screen_at_80x24_snapshot(fixed_runs, snap_compare):
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=(80, 24), press=["down"])


def test_help_screen_snapshot(fixed_runs, snap_compare):
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=(100, 32),
                        press=["question_mark"])
