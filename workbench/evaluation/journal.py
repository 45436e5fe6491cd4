"""An evaluation's progress on disk, so a killed evaluation resumes where it stopped.

After every finished pass (one sweep value of a carried sweep) and every finished spec, the engine hands
the spec's state to the journal, which writes it atomically: tensors and plain values only (loaded with
`weights_only=True`: a journal is untrusted input like a checkpoint). A journal belongs to one
evaluation: its identity (the checkpoint's path, size and mtime, the samples, the seed, the specs) is
stored with it, and a journal of anything else is ignored, never mixed in. Attack seeds depend only on
the spec and the chunk number, which the journal keeps, so a resumed evaluation attacks exactly as an
uninterrupted one would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_write_bytes

FORMAT = "workbench-eval-journal"


class EvalJournal:
    def __init__(self, path: str | Path, identity: dict[str, Any]):
        self.path = Path(path)
        self.identity = json.dumps(identity, sort_keys=True, default=str)
        self.specs: dict[str, dict[str, Any]] = self._load()

    def _load(self) -> dict[str, dict[str, Any]]:
        try:
            data = torch.load(self.path, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            return {}
        except Exception:  # a torn or foreign file: start over rather than trust it
            return {}
        if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("identity") != self.identity:
            return {}
        specs = data.get("specs")
        return specs if isinstance(specs, dict) else {}

    def get(self, key: str) -> dict[str, Any] | None:
        return self.specs.get(key)

    def save(self, key: str, state: dict[str, Any]) -> None:
        self.specs[key] = state
        payload = {"format": FORMAT, "identity": self.identity, "specs": self.specs}
        atomic_write_bytes(self.path, lambda fh: torch.save(payload, fh))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
