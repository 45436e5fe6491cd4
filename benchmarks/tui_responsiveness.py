"""`workbench tui` in a real terminal (tmux): startup to first paint, key-to-repaint latency, memory.

The TUI runs in a detached tmux session. A tmux *control-mode* client (`tmux -C attach`)
streams every byte the app writes to its terminal as `%output` notifications the moment tmux
reads them, so a repaint is timed from the app's own output, not by polling screenshots.

- startup: from spawning `workbench tui` to the first output that contains the runs table's
  header (first paint with data), `--repeats` times; median and max.
- key to repaint: on the home screen, `down`/`up` move the row cursor, and the detail line
  under the table names the highlighted run; the time from `send-keys` to the first output
  naming the newly highlighted run. Then the same in the run monitor (keys 1/2 switch between
  the charts and the config tab; the marker is a word only the new tab draws). Measured idle
  and again while training processes keep both cores busy (`--load N` quickstart runs, each
  with 2 torch threads) and the monitor follows a live run.
- while the backend starts: the backend process (`workbench.tui.backend`, which imports torch)
  is killed, so the new-run form's catalog request starts a new one; the time from `?` to the
  help screen's first output, `?` sent 0.2 s (as before: it also meets the form's own mount work)
  and 1 s after the form's first paint, `--repeats`//3 (>= 3) samples each, with the trainings
  running. (Before the backend, this was the stall of a torch import in a thread of the TUI
  process.) Then, with the backend warm, the time from `n` to the form's "ready to launch"
  (catalog + first check).
- memory: VmRSS / VmHWM of the TUI process on the home screen, in the monitor, and after the
  new-run form loaded its catalog; and of the backend process (the only one that holds torch).

    python benchmarks/tui_responsiveness.py [--repeats 10] [--load 2]
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SESSION = "wb-bench"
# A tmux server of its own: a shared one may hold other sessions (e.g. a test run's) with other options.
SOCKET = f"wb-bench-{os.getpid()}"
COLS, ROWS = 120, 36


class ControlClient:
    """A tmux control-mode client: send commands, timestamp the pane's %output lines."""

    def __init__(self, session: str):
        self.proc = subprocess.Popen(["tmux", "-L", SOCKET, "-C", "attach", "-t", session],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
                                     errors="replace")
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("%output"):
                self.lines.put((time.perf_counter(), line))

    def drain(self) -> None:
        while not self.lines.empty():
            self.lines.get_nowait()

    def send(self, *keys: str) -> float:
        self.drain()
        t0 = time.perf_counter()
        self.proc.stdin.write(f"send-keys -t {SESSION} {' '.join(keys)}\n")
        self.proc.stdin.flush()
        return t0

    def wait_for(self, marker: str, t0: float, timeout: float = 10.0) -> float:
        """Seconds from t0 until an output line containing `marker` (control mode escapes only
        non-printables, so plain words in the output match)."""
        end = time.time() + timeout
        while time.time() < end:
            try:
                t, line = self.lines.get(timeout=0.05)
            except queue.Empty:
                continue
            if marker in line:
                return t - t0
        raise TimeoutError(f"no output with {marker!r} within {timeout} s")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.terminate()


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", "-L", SOCKET, *args], capture_output=True, text=True, check=False).stdout


def start_tui(runs: Path) -> None:
    tmux("kill-session", "-t", SESSION)
    cmd = f"{sys.executable} -m workbench tui --runs {runs}"
    tmux("new-session", "-d", "-s", SESSION, "-x", str(COLS), "-y", str(ROWS), cmd)


def tui_pid() -> int:
    pane = int(tmux("list-panes", "-t", SESSION, "-F", "#{pane_pid}").split()[0])
    # tmux runs the command through sh, which may or may not exec it: find the python process.
    for pid in [pane] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pane)], capture_output=True,
                                                        text=True).stdout.split()]:
        if "workbench" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
            return pid
    return pane


def backend_pid(tui: int) -> int | None:
    """The TUI's backend process (a child of the TUI), if it runs."""
    children = subprocess.run(["pgrep", "-P", str(tui)], capture_output=True, text=True).stdout.split()
    for pid in children:
        try:
            if b"workbench.tui.backend" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        except OSError:
            continue
    return None


def memory(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def measure_startup(runs: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        tmux("kill-session", "-t", SESSION)
        # The control client needs a session to attach to: start a shell, attach, then exec the TUI in it.
        tmux("new-session", "-d", "-s", SESSION, "-x", str(COLS), "-y", str(ROWS), "sh")
        client = ControlClient(SESSION)
        time.sleep(0.3)
        t0 = client.send(f"'exec {sys.executable} -m workbench tui --runs {runs}'", "Enter")
        times.append(client.wait_for("data/model/defense", t0, timeout=30))
        client.close()
    tmux("kill-session", "-t", SESSION)
    return times


def key_latencies(client: ControlClient, keys_and_markers: list[tuple[str, str]], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        for key, marker in keys_and_markers:
            t0 = client.send(key)
            out.append(client.wait_for(marker, t0))
            time.sleep(0.05)
    return out


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"median {statistics.median(ms):6.1f} ms   p95 {p95:6.1f} ms   max {ms[-1]:6.1f} ms   (n={len(ms)})"


def launch_load(runs: Path, n: int, epochs: int) -> list[Path]:
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    folders = []
    for i in range(n):
        out = subprocess.run([sys.executable, "-m", "workbench", "train", "--profile", "quickstart", "--out",
                              str(runs), "--set", f"epochs={epochs}", "--set", f"name=load{i}", "--detach"],
                             capture_output=True, text=True, env=env, check=True).stdout
        folders.append(Path(out.splitlines()[0].removeprefix("run: ")))
    return folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--load", type=int, default=2, help="training processes running during the loaded part")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        sys.exit("tmux is required")
    work = Path(tempfile.mkdtemp(prefix="wb-tui-bench-"))
    runs = work / "runs"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tui.fixed_runs import build_fixed_runs  # noqa: E402

    build_fixed_runs(work)
    print(f"machine: {os.cpu_count()} cores; terminal {COLS}x{ROWS}; python {sys.version.split()[0]}")

    # Kept while empty: no race with a server still exiting after its last session was killed.
    tmux("start-server", ";", "set-option", "-g", "exit-empty", "off")
    try:
        measure(args, runs)
    finally:
        tmux("kill-server")  # our own server: its TUIs end, and their backends with them
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, runs: Path) -> None:
    from tui.fixed_runs import FAILED, FINISHED, STOPPED  # noqa: E402

    startup = measure_startup(runs, max(3, args.repeats // 2))
    print(f"startup to first paint with the runs table:   {summary(startup)}")

    start_tui(runs)
    client = ControlClient(SESSION)
    time.sleep(2.0)
    pid = tui_pid()
    rss, hwm = memory(pid)
    print(f"memory, home screen:                            RSS {rss:6.1f} MiB   peak {hwm:6.1f} MiB")
    home_keys = [("Down", FAILED), ("Down", FINISHED), ("Up", FAILED), ("Up", STOPPED)]
    idle = key_latencies(client, home_keys, args.repeats)
    print(f"key to repaint, home, idle:                     {summary(idle)}")

    load = launch_load(runs, args.load, epochs=500)
    try:
        time.sleep(4.0)  # let them start training (both cores busy)
        loaded = key_latencies(client, home_keys, args.repeats)
        print(f"key to repaint, home, {args.load} trainings running:     {summary(loaded)}")
        # The monitor on a live run: charts redraw as metrics arrive while keys switch tabs.
        client.send("Escape")
        time.sleep(0.3)
        tmux("kill-session", "-t", SESSION)
        client.close()
        start_tui(runs)
        client = ControlClient(SESSION)
        time.sleep(2.0)
        t0 = client.send("Enter")  # the newest run (a live one) is the first row
        client.wait_for("loss", t0, timeout=10)
        time.sleep(2.0)
        monitor = key_latencies(client, [("2", "optimizer"), ("1", "loss")], args.repeats)
        print(f"key to repaint, monitor (1/2 tabs), {args.load} trainings: {summary(monitor)}")
        pid = tui_pid()
        rss, hwm = memory(pid)
        print(f"memory, monitor on a live run:                  RSS {rss:6.1f} MiB   peak {hwm:6.1f} MiB")
        # The form's catalog request while the backend (re)starts: kill it first (the client starts a new
        # one, which imports torch in its own process, as on a first start). Does a key still repaint?
        client.send("Escape")
        time.sleep(0.5)
        pid = tui_pid()
        # `?` 0.2 s after the form's first paint (as before the backend: this also meets the form's own
        # mount work) and 1 s after it (only the backend's start is left).
        during: dict[float, list[float]] = {0.2: [], 1.0: []}
        for _ in range(max(3, args.repeats // 3)):
            for delay, samples in during.items():
                old = backend_pid(pid)
                if old is not None:
                    os.kill(old, signal.SIGKILL)
                time.sleep(0.3)
                t0 = client.send("n")
                client.wait_for("Launch", t0, timeout=30)
                time.sleep(delay)
                t0 = client.send("?")
                samples.append(client.wait_for("Everywhere", t0, timeout=30))
                client.send("Escape")
                time.sleep(0.3)
                client.send("Escape")  # back home; the catalog request goes on in its worker
                time.sleep(0.5)
        for delay, samples in during.items():
            print(f"key to repaint while the backend starts, {delay:.1f} s after the form: {summary(samples)}")
        time.sleep(10.0)  # the last backend has preloaded torch and the registries
        t0 = client.send("n")
        ready = client.wait_for("ready to launch", t0, timeout=60)
        print(f"new-run form ready (catalog + first check), warm backend: {ready * 1000:6.1f} ms")
        rss, hwm = memory(pid)
        print(f"memory, new-run form with its catalog:          RSS {rss:6.1f} MiB   peak {hwm:6.1f} MiB")
        backend = backend_pid(pid)
        if backend is None:
            print("memory, backend process:                        (not running)")
        else:
            rss, hwm = memory(backend)
            print(f"memory, backend process (torch):                RSS {rss:6.1f} MiB   peak {hwm:6.1f} MiB")
    finally:
        client.close()
        tmux("kill-session", "-t", SESSION)
        for folder in load:
            subprocess.run([sys.executable, "-m", "workbench", "stop", str(folder)], capture_output=True)


if __name__ == "__main__":
    main()
