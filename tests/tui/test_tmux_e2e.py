"""The real `workbench tui` in a real terminal (tmux send-keys / capture-pane), end to end.

Start it on an empty runs folder, launch the quickstart from the new-run form, watch the
monitor's charts grow, quit while training runs, reopen (the run is still there, running or
finished; a second TUI on the same folder sees it too), then evaluate the checkpoint in the
attack panel and read the result table.

CI installs tmux and sets WORKBENCH_REQUIRE_TMUX=1, so there this test fails instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.tmux

if shutil.which("tmux") is None:
    if os.environ.get("WORKBENCH_REQUIRE_TMUX"):
        raise RuntimeError("tmux is required for the end-to-end TUI test (WORKBENCH_REQUIRE_TMUX is set)")
    pytest.skip("tmux is not installed: the end-to-end TUI test needs it", allow_module_level=True)

BRAILLE = range(0x2801, 0x2900)  # plotext draws lines in braille cells (U+2800 is blank)


class Terminal:
    """One tmux session running one command, in a clean environment (`env -i`): the tmux server may
    inherit COLUMNS/LINES from pytest, and Textual would believe them over the real window size."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str], size: tuple[int, int] = (110, 34)):
        self.name = f"wb-e2e-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        subprocess.run(["tmux", "new-session", "-d", "-s", self.name, "-x", str(size[0]), "-y", str(size[1]),
                        "-c", str(cwd), f"env -i {exports} {command}"], check=True)
        # Keep the size fixed whatever other clients of this tmux server do.
        subprocess.run(["tmux", "set-option", "-t", self.name, "window-size", "manual"], capture_output=True)
        subprocess.run(["tmux", "resize-window", "-t", self.name, "-x", str(size[0]), "-y", str(size[1])],
                       capture_output=True)

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name], capture_output=True).returncode == 0

    def capture(self) -> str:
        return subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name], capture_output=True,
                              text=True).stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        return self.wait_until(lambda screen: text in screen, repr(text), timeout)

    def wait_until(self, shows, what: str, timeout: float = 60.0) -> str:
        """Poll the screen (a frame may be half painted) until `shows(screen)`; returns that screen."""
        end = time.time() + timeout
        screen = ""
        while time.time() < end:
            screen = self.capture()
            if shows(screen):
                return screen
            time.sleep(0.1)
        raise AssertionError(f"{what} did not appear within {timeout} s; the screen shows:\n{screen}")

    def wait_gone(self, timeout: float = 10.0) -> None:
        end = time.time() + timeout
        while time.time() < end and self.alive():
            time.sleep(0.1)
        assert not self.alive(), "the TUI did not exit"

    def close(self) -> None:
        subprocess.run(["tmux", "kill-session", "-t", self.name], capture_output=True)


def braille_cells(screen: str) -> int:
    return sum(ord(ch) in BRAILLE for ch in screen)


def status_of(runs: Path) -> tuple[Path, dict]:
    (run,) = [p for p in runs.iterdir() if (p / "config.yaml").is_file()]
    return run, json.loads((run / "status.json").read_text())


def test_launch_watch_quit_reopen_and_attack(tmp_path):
    env = {"WORKBENCH_DATA": os.environ.get("WORKBENCH_DATA", ""), "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8",
           "TERM": "xterm-256color", "PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    command = f"{shlex.quote(sys.executable)} -m workbench tui --runs runs"
    runs = tmp_path / "runs"
    first = Terminal(command, tmp_path, env)
    terminals = [first]
    try:
        first.wait_for("No runs in runs yet", timeout=30)
        # New run: pick the quickstart profile from the list by typing its name, then launch.
        first.keys("n")
        first.wait_for("10 classes)", timeout=60)  # the catalog (datasets, models, defenses) arrived
        first.keys("Enter")
        first.wait_for("adr_adv_mnist")  # the profile list is open
        first.keys("q", "u", "i", "c", "k", "Enter")
        first.wait_until(lambda screen: "run name          quickstart" in screen and "epochs            15" in screen
                         and "ready to launch" in screen, "the quickstart profile in the form, checked", timeout=60)
        first.keys("C-l")  # a whole-config check still pending is repeated by the launch itself
        # The monitor follows the new run; its charts grow epoch by epoch.
        first.wait_for("workbench — quickstart-", timeout=60)
        first.wait_for("running ·", timeout=60)
        seen: dict[int, int] = {}  # epochs done -> line cells drawn, while it runs
        end = time.time() + 90
        screen = ""
        while time.time() < end:
            screen = first.capture()
            match = re.search(r"running · (\d+)/15 epochs done", screen)
            if match:
                seen.setdefault(int(match.group(1)), braille_cells(screen))
            if re.search(r"finished · \d+/15 epochs done", screen) or len(seen) >= 4:
                break  # seen it grow: quit while it (most likely) still trains
            time.sleep(0.1)
        epochs = sorted(seen)
        assert len(epochs) >= 3, f"saw too few epochs while it ran: {seen}; last screen:\n{screen}"
        assert seen[epochs[-1]] > seen[epochs[0]], f"charts did not grow: {seen}"

        # Quit while it trains: the trainer is its own process and keeps going.
        first.keys("C-q")
        first.wait_gone()
        run, status = status_of(runs)
        assert status["state"] in ("running", "finished"), status
        if status["state"] == "running":
            os.kill(status["pid"], 0)  # still alive after the UI exited

        # Reopen: the run is listed with its live state; a second TUI on the same folder agrees.
        second = Terminal(command, tmp_path, env)
        third = Terminal(command, tmp_path, env)
        terminals += [second, third]
        for term in (second, third):
            term.wait_until(lambda screen: re.search(rf"{run.name}\s+(running|finished)", screen) is not None,
                            f"{run.name} listed as running or finished", timeout=30)
        third.keys("C-q")
        third.wait_gone()
        second.wait_for("finished", timeout=120)

        # The attack panel on the run's checkpoint: PGD is checked by default; run it and read the table.
        second.keys("a")
        second.wait_for("runs the checked attacks", timeout=30)
        second.keys("C-r")
        screen = second.wait_for("worst case", timeout=120)
        assert "PGD" in screen and "clean" in screen
        reports = list((run / "evals").glob("best-*.json"))
        assert len(reports) == 1
        report = json.loads(reports[0].read_text())
        assert report["results"] and all(r["robust_accuracy"] <= report["clean_accuracy"] for r in report["results"])
        second.keys("C-q")
        second.wait_gone()
    finally:
        for term in terminals:
            term.close()
        if runs.is_dir():
            for run in runs.iterdir():
                status = run / "status.json"
                if status.is_file():
                    data = json.loads(status.read_text())
                    if data.get("state") == "running" and data.get("pid"):
                        try:
                            os.kill(data["pid"], 15)
                        except ProcessLookupError:
                            pass
