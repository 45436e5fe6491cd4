"""Checkpoints: tensors and plain data only, written atomically, loaded without unpickling objects.

A checkpoint is a dict: format/version markers, the model's build recipe (registry name,
input shape, classes, normalization, options, defense), its state_dict, and for resuming
the optimizer state, position, RNG states and metrics. `torch.load(..., weights_only=True)`
reads it; anything else (an arbitrary pickle, a truncated file) is rejected with one line.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import WorkbenchError

FORMAT = "workbench-checkpoint"
VERSION = 1


def atomic_write_bytes(path: Path, write) -> None:
    """Write via a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def save_checkpoint(data: dict[str, Any], path: Path) -> None:
    payload = {"format": FORMAT, "version": VERSION, **data}
    atomic_write_bytes(Path(path), lambda fh: torch.save(payload, fh))


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely; any problem is a one-line `WorkbenchError`."""
    path = Path(path)
    if not path.exists():
        raise WorkbenchError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise WorkbenchError(f"checkpoint {path} is not a file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except __import__("pickle").UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsupported content"
        raise WorkbenchError(
            f"{path} is not a safe workbench checkpoint (it holds Python objects, which are never unpickled: {first[:160]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, AttributeError) as exc:
        raise WorkbenchError(f"{path} is not a readable checkpoint (truncated or corrupt: {type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise WorkbenchError(f"{path} is not a workbench checkpoint (no '{FORMAT}' marker)")
    if data.get("version") != VERSION:
        raise WorkbenchError(f"{path} has checkpoint version {data.get('version')!r}; this workbench reads {VERSION}")
    for key in ("model", "state_dict"):
        if key not in data:
            raise WorkbenchError(f"{path} is an incomplete checkpoint (missing {key!r})")
    return data


def build_model(recipe: dict[str, Any]) -> nn.Module:
    """Rebuild the (untrained) architecture a checkpoint describes."""
    from defenses import create_defense

    from .models import create_model

    norm = recipe.get("normalize")
    model = create_model(
        recipe["name"], recipe["in_channels"], recipe["num_classes"], recipe["image_size"],
        normalize=(norm["mean"], norm["std"]) if norm else None, **recipe.get("options", {}),
    )
    defense = recipe.get("defense") or {"name": "softmax", "params": {}}
    return create_defense(defense["name"], defense["params"], recipe["num_classes"]).transform_model(model)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """The classifier stored in a checkpoint, in eval mode: [0, 1] inputs in, logits out."""
    data = read_checkpoint(path)
    try:
        model = build_model(data["model"])
        model.load_state_dict(data["state_dict"])
    except WorkbenchError:
        raise
    except (KeyError, TypeError, RuntimeError) as exc:
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise WorkbenchError(f"{path}: checkpoint does not match its model recipe ({msg})") from None
    return model.to(device).eval()
