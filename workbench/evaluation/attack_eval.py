"""`workbench attack`: robust accuracy of a checkpoint under attacks at several eps.

Results are returned as plain data and saved as JSON in the checkpoint's `evals/`
folder (the run's `evals/` for a run checkpoint), for the TUI and reports.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from attacks import ATTACKS

from ..attacks_util import iterate_batches
from ..checkpoint import model_from_checkpoint, read_checkpoint
from ..data import load_raw
from ..errors import WorkbenchError
from ..provenance import provenance
from ..runs import write_json_atomic


@dataclass
class AttackPlan:
    attack: str
    eps: list[float]
    steps: int = 40
    step_size: float | None = None  # None: 2.5 * eps / steps
    restarts: int = 1
    loss: str = "ce"
    seed: int = 0

    def build(self, model, eps: float):
        cls = ATTACKS.get(self.attack)
        params: dict[str, Any] = {"eps": eps, "loss": self.loss, "seed": self.seed}
        if self.attack == "pgd":
            params.update(steps=self.steps, step_size=self.step_size, restarts=self.restarts)
        return cls(model, **params)


def check_eps_list(eps: list[float]) -> list[float]:
    if not eps:
        raise WorkbenchError("--eps needs at least one value")
    for e in eps:
        if not (math.isfinite(e) and e >= 0):
            raise WorkbenchError(f"--eps values must be finite numbers >= 0 (got {e})")
        if e > 1:
            raise WorkbenchError(f"--eps {e} is larger than the whole [0, 1] pixel range; eps is in pixel units (e.g. 0.3 or 8/255=0.031)")
    return eps


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder (its best.pt, else last.pt)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best.pt", "last.pt"):
            if (p / "checkpoints" / name).is_file():
                return p / "checkpoints" / name
        raise WorkbenchError(f"{p} is a folder without checkpoints/best.pt or checkpoints/last.pt")
    return p


def evals_dir_for(ckpt: Path) -> Path:
    return ckpt.parent.parent / "evals" if ckpt.parent.name == "checkpoints" else ckpt.parent / "evals"


def evaluate_checkpoint(
    checkpoint: str | Path,
    plans: list[AttackPlan],
    n: int | None = None,
    batch_size: int = 500,
    data_root: str | None = None,
    device: torch.device | str = "cpu",
    on_progress: Callable[[str, float, int, int], None] | None = None,
) -> dict[str, Any]:
    ckpt = resolve_checkpoint(checkpoint)
    data = read_checkpoint(ckpt)
    device = torch.device(device)
    model = model_from_checkpoint(data, ckpt, device)
    dataset = data.get("dataset")
    if not isinstance(dataset, str):
        raise WorkbenchError(f"{ckpt}: checkpoint does not name its dataset")
    x, y = load_raw(dataset, "test", root=data_root)
    if n is not None:
        if n <= 0:
            raise WorkbenchError("--n must be a positive number of test samples")
        x, y = x[:n], y[:n]
    x, y = x.to(device), y.to(device)

    t0 = time.perf_counter()
    with torch.no_grad():
        clean_correct = torch.cat([model(xb).argmax(1) == yb for xb, yb in iterate_batches(x, y, batch_size)])
    clean_seconds = time.perf_counter() - t0

    results = []
    for plan in plans:
        for eps in plan.eps:
            attack = plan.build(model, eps)
            robust = torch.zeros((), dtype=torch.long, device=device)
            norm_max = 0.0
            done = 0
            t0 = time.perf_counter()
            for xb, yb in iterate_batches(x, y, batch_size):
                res = attack.run(xb, yb)
                robust += res.adv_correct.sum()
                norm_max = max(norm_max, float(res.norm.max()))
                done += len(yb)
                if on_progress:
                    on_progress(plan.attack, eps, done, len(y))
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            results.append({
                "attack": plan.attack, "eps": eps, "robust_accuracy": int(robust) / len(y),
                "seconds": time.perf_counter() - t0, "max_perturbation": norm_max, "settings": attack.settings(),
            })
    return {
        "checkpoint": str(ckpt),
        "dataset": dataset,
        "model": data["model"]["name"],
        "defense": (data["model"].get("defense") or {}).get("name", "softmax"),
        "n": int(len(y)),
        "clean_accuracy": int(clean_correct.sum()) / len(y),
        "clean_seconds": clean_seconds,
        "results": results,
        "device": str(device),
        "created": time.time(),
        "provenance": provenance(),
    }


def save_evaluation(result: dict[str, Any]) -> Path:
    ckpt = Path(result["checkpoint"])
    out = evals_dir_for(ckpt)
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = out / f"{ckpt.stem}-{stamp}.json"
    i = 1
    while path.exists():
        path = out / f"{ckpt.stem}-{stamp}-{i}.json"
        i += 1
    write_json_atomic(path, result)
    return path
