"""The monitor's Config and Log tabs at 80 columns: config.yaml one key per line, folded with indentation;
long log lines wrapped with a hanging indent, re-laid out when the terminal's width changes."""

from __future__ import annotations

import yaml
from textual.widgets import TabbedContent

from workbench.tui.model.run_text import CONFIG_BYTES, HANGING_INDENT, config_for_display, config_text, hanging_wrap
from workbench.tui.widgets.run_text_views import ConfigView, WrappedLog

from .fixed_runs import DATA, FAILED, FINISHED
from .test_monitor import app_for, ready
from .waiting import wait_until, wait_until_settled

LONG_PATH = "/home/someone/experiments/robustness/runs/quickstart-20261205-193845/checkpoints/last.pt"
LOG = [
    "training 15 epochs of 23 batches",
    "epoch 1/15  loss 2.1905  train 24.06%  clean 60.45%  lr 0.003  0.2s",
    f"stopped by SIGTERM in epoch 2 at batch 8/23; resume to continue: workbench train --resume {LONG_PATH}",
]


def test_config_is_shown_one_key_per_line_within_the_width_and_means_the_same():
    text = (DATA / "config.yaml").read_text()
    assert any(len(line) > 76 for line in text.splitlines())  # the file's flow lines overflow 80 columns
    shown = config_for_display(text, 60)
    assert yaml.safe_load(shown) == yaml.safe_load(text)
    assert all(len(line) <= 60 for line in shown.splitlines())
    assert "  clean_every: 1" in shown.splitlines()  # eval's flow mapping became a block
    assert "  milestones: []" in shown.splitlines() and "  betas: [0.9, 0.999]" in shown.splitlines()


def test_config_that_is_no_mapping_or_was_cut_is_shown_as_it_is(tmp_path):
    assert config_for_display("just: [unclosed", 60) == "just: [unclosed"
    assert config_for_display("- a list\n", 60) == "- a list\n"
    nested = "[" * 5000  # a broken file nests past the YAML parser's recursion limit
    assert config_for_display(nested, 60) == nested
    big = tmp_path / "config.yaml"
    big.write_text("name: x\n" + "# padding\n" * (CONFIG_BYTES // 10 + 10))
    text = config_text(big)
    assert "cut: config.yaml is larger than" in text
    assert config_for_display(text, 60) == text  # re-dumping the part that parses would hide the note


def test_log_lines_wrap_with_a_hanging_indent_and_lose_no_text():
    rows = hanging_wrap(LOG, 72)
    assert all(len(r) <= 72 for r in rows)
    assert rows[:2] == LOG[:2]  # short lines stay as they are, double spaces included
    continued = rows[2:]
    assert len(continued) > 1 and all(r.startswith(HANGING_INDENT) for r in continued[1:])
    assert "".join(r.strip() for r in continued).replace(" ", "") == LOG[2].replace(" ", "")
    assert hanging_wrap(LOG, 0) == LOG  # not laid out yet: kept whole


async def test_config_and_log_tabs_fit_80_columns_and_follow_a_resize(fixed_runs):
    root = fixed_runs / FAILED
    (root / "train.log").write_text("\n".join(LOG) + "\n")
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        app.open_monitor(root)
        await wait_until(pilot, lambda: ready(app) and app.screen.log_lines, what="the log")
        log = app.screen.query_one(WrappedLog)
        await wait_until(pilot, lambda: log.size.width > 0 and len(log.lines) > len(LOG), what="the wrapped log")
        assert all(len(line) <= log.size.width for line in log.lines)
        wrapped_at_80 = len(log.lines)
        await pilot.resize_terminal(120, 36)
        await wait_until(pilot, lambda: len(log.lines) < wrapped_at_80, what="the log laid out again at 120")

        app.screen.query_one(TabbedContent).active = "config"
        view = app.screen.query_one(ConfigView)
        await wait_until(pilot, lambda: view.size.width > 0 and view.shown_text, what="the config")
        await wait_until(pilot, lambda: "  robust_every: 5" in view.shown_text.splitlines(), what="block style")
        assert max(len(line) for line in view.shown_text.splitlines()) <= view.size.width
        await pilot.resize_terminal(80, 24)
        await wait_until(pilot, lambda: view.size.width < 80, what="the narrower config view")
        assert max(len(line) for line in view.shown_text.splitlines()) <= view.size.width


def _open_tab(root, tab: str):
    async def run_before(pilot):
        pilot.app.open_monitor(root)
        await wait_until(pilot, lambda: ready(pilot.app), what="the monitor")
        pilot.app.screen.query_one(TabbedContent).active = tab
        await wait_until_settled(pilot)
    return run_before


def test_config_tab_snapshot_at_80x24(fixed_runs, snap_compare):
    assert snap_compare(app_for(fixed_runs), terminal_size=(80, 24), run_before=_open_tab(fixed_runs / FINISHED, "config"))


def test_log_tab_snapshot_at_120x36(fixed_runs, snap_compare):
    root = fixed_runs / FAILED
    (root / "train.log").write_text("\n".join(LOG) + "\n")
    assert snap_compare(app_for(fixed_runs), terminal_size=(120, 36), run_before=_open_tab(root, "log"))


def test_log_tab_snapshot_at_80x24(fixed_runs, snap_compare):
    root = fixed_runs / FAILED
    (root / "train.log").write_text("\n".join(LOG) + "\n")
    assert snap_compare(app_for(fixed_runs), terminal_size=(80, 24), run_before=_open_tab(root, "log"))
