"""Snapshots of the home screen, the help screen and the command palette (fixed runs, fixed clock)."""

from __future__ import annotations

from workbench.tui.app import WorkbenchApp

from .fixed_runs import FIXED_NOW


def test_runs_screen_at_120x36_snapshot(fixed_runs, snap_compare):
    # Every column in view: no hint for hidden ones.
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=(120, 36))


def test_runs_screen_at_80x24_snapshot(fixed_runs, snap_compare):
    # run, state, epoch, clean, robust, age in view; the hint line names how many columns are out of view.
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=(80, 24), press=["down"])


def test_runs_screen_sorted_and_filtered_at_80x24_snapshot(fixed_runs, snap_compare):
    # Sorted by robust accuracy (o five times), filtered to the pcl run, back in the table (1 of 3).
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=(80, 24),
                        press=["o", "o", "o", "o", "o", "slash", "p", "c", "l", "enter"])


def test_help_screen_snapshot(fixed_runs, snap_compare):
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=(100, 32),
                        press=["question_mark"])


def test_help_screen_at_80x24_snapshot(fixed_runs, snap_compare):
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=(80, 24),
                        press=["question_mark"])


def test_help_screen_at_120x36_snapshot(fixed_runs, snap_compare):
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=(120, 36),
                        press=["question_mark"])


def test_delete_confirmation_at_80x24_snapshot(fixed_runs, snap_compare):
    # The modal names the run and what goes with it; the runs list stays visible behind it.
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=(80, 24),
                        press=["down", "d"])


def test_delete_confirmation_at_120x36_snapshot(fixed_runs, snap_compare):
    assert snap_compare(WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW), terminal_size=(120, 36),
                        press=["down", "d"])
