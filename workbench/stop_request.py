"""SIGTERM/SIGINT as a request, not a kill: the trainer reads the flag at safe points (a batch boundary,
after set-up) and checkpoints before it exits. Torch-free, so the CLI installs it before importing torch."""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """Records the first stop signal. Re-entrant: nested `with` blocks install the handlers once."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._saved: dict[int, object] = {}
        self._depth = 0

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    def __enter__(self) -> "StopRequest":
        # Handlers can only be set from the main thread; elsewhere (a test's thread) the flag is inert.
        if self._depth == 0 and threading.current_thread() is threading.main_thread():
            self._saved = {s: signal.signal(s, self._handle) for s in SIGNALS}
        self._depth += 1
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            for s, handler in self._saved.items():
                signal.signal(s, handler)
            self._saved = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else "a signal to another rank"
