"""Shared machinery of the reproduce_*.py benchmarks: train a set of profiles, evaluate, write tables.

Training goes through the real CLI (`workbench train`), one subprocess per model, several at once
with `--jobs`; every model has its own runs folder under `--out`, so a rerun reuses finished runs
and resumes killed ones. Evaluation uses the attack engine in-process on each best checkpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbench.evaluation import AttackSpec, Protocol
from workbench.evaluation.attack_eval import evaluate_checkpoint
from workbench.runs import Status, read_metrics


@dataclass
class Model:
    key: str  # short name in tables (SM, CCN, ...)
    profile: str
    overrides: list[str] = field(default_factory=list)


def safe(key: str) -> str:
    """A model key as a file name ("CCN+LS" -> "CCN_LS")."""
    return key.replace("+", "_")


def model_list(text: str | None, known: list[str], default: list[str]) -> list[str]:
    keys = text.split(",") if text else default
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise SystemExit(f"--models: unknown {', '.join(unknown)}; choose from {', '.join(known)}")
    return keys


def common_args(description: str, default_out: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", default=default_out, help="runs and results folder (reused: finished runs are kept)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--jobs", type=int, default=1, help="models trained at once")
    ap.add_argument("--full", action="store_true", help="the paper's epochs (default: the short CPU schedule)")
    ap.add_argument("--epochs", type=int, default=None, help="override the epoch count")
    ap.add_argument("--models", default=None, help="comma-separated subset of the models")
    ap.add_argument("--n", type=int, default=10000, help="test samples for the paper's gradient attacks")
    ap.add_argument("--n-strong", type=int, default=1000, help="test samples for the strong protocol")
    ap.add_argument("--eval-only", action="store_true", help="skip training; evaluate existing runs")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads per process (default: cores / jobs); set it when running scripts side by side")
    ap.add_argument("--train-subset", type=int, default=None, help="train on the first N images (smoke tests)")
    ap.add_argument("--table", default=None, help="write the markdown table here (default: OUT/results.md)")
    return ap


def scaled_milestones(milestones: list[int], paper_epochs: int, epochs: int) -> list[int]:
    """The paper's lr drops at the same fractions of a shorter run."""
    return sorted(max(1, round(m * epochs / paper_epochs)) for m in milestones)


def schedule_overrides(args, paper_epochs: int, short_epochs: int, milestones: list[int] | None) -> tuple[int, list[str]]:
    """(epochs, --set overrides) for the chosen schedule; lr milestones keep their fractions of the run."""
    epochs = args.epochs or (paper_epochs if args.full else short_epochs)
    sets = ["eval.robust_every=0"]
    if epochs != paper_epochs:
        sets.append(f"epochs={epochs}")
        if milestones:
            sets.append(f"schedule.milestones={scaled_milestones(milestones, paper_epochs, epochs)}")
    if args.train_subset:
        sets.append(f"data.train_subset={args.train_subset}")
    return epochs, sets


def find_run(folder: Path) -> Path | None:
    runs = sorted(p for p in folder.glob("*/") if (p / "config.yaml").exists()) if folder.exists() else []
    return runs[-1] if runs else None


def train_one(model: Model, out: Path, device: str, threads: int) -> tuple[Path, float]:
    folder = out / "runs" / safe(model.key)
    # A run is reused only for the same request; otherwise a table would mix schedules.
    request = {"profile": model.profile, "overrides": model.overrides}
    asked = folder / "request.json"
    if asked.exists() and json.loads(asked.read_text()) != request:
        raise SystemExit(f"{folder} holds a run trained with other settings ({asked.read_text().strip()}); "
                         "use another --out or delete it")
    folder.mkdir(parents=True, exist_ok=True)
    asked.write_text(json.dumps(request))
    run = find_run(folder)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    status = Status.read(run / "status.json") if run else None
    if run and status is not None and status.state == "finished":
        return run, 0.0
    t0 = time.time()
    if run and (run / "checkpoints" / "last.pt").exists():
        cmd = ["train", "--resume", str(run), "--device", device]
    else:
        cmd = ["train", "--profile", model.profile, "--out", str(folder), "--device", device]
        for o in model.overrides:
            cmd += ["--set", o]
    log = (out / "logs")
    log.mkdir(parents=True, exist_ok=True)
    with open(log / f"{safe(model.key)}.log", "a") as fh:
        proc = subprocess.run([sys.executable, "-m", "workbench", *cmd], cwd=ROOT, env=env, stdout=fh,
                              stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"training {model.key} failed; see {log / (safe(model.key) + '.log')}")
    run = find_run(folder)
    assert run is not None
    return run, time.time() - t0


def existing_runs(models: list[Model], out: Path) -> dict[str, Path]:
    runs = {m.key: find_run(out / "runs" / safe(m.key)) for m in models}
    missing = [k for k, r in runs.items() if r is None or not (r / "checkpoints" / "best.pt").exists()]
    if missing:
        raise SystemExit(f"--eval-only: no trained run for {', '.join(missing)} under {out / 'runs'}")
    return runs


def train_all(models: list[Model], out: Path, device: str, jobs: int, threads: int | None = None) -> dict[str, Path]:
    threads = threads or (max(1, (os.cpu_count() or 2) // jobs) if device in ("cpu", "auto") else 2)
    print(f"training {len(models)} models, {jobs} at a time, {threads} threads each", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        done = list(pool.map(lambda m: (m, *train_one(m, out, device, threads)), models))
    runs = {}
    for m, run, seconds in done:
        records = [r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "epoch"]
        train_s = sum(r.get("seconds", 0) for r in records)
        print(f"  {m.key:8s} {run.name}: {len(records)} epochs, {train_s / 60:.1f} min training "
              f"(wall {seconds / 60:.1f} min this call), clean {records[-1].get('test_clean_acc')}", flush=True)
        runs[m.key] = run
    return runs


def strong_protocol(eps: list[float], n: int) -> Protocol:
    """The issue's strong protocol: PGD-40 with random start on CE and CW, then standard AutoAttack, cascaded."""
    pgd = {"steps": 40, "step_size": "eps/4", "random_start": True}
    return Protocol("strong", [
        AttackSpec("pgd", {**pgd, "loss": "ce"}, eps, "PGD-40 CE", max_samples=n),
        AttackSpec("pgd", {**pgd, "loss": "cw"}, eps, "PGD-40 CW", max_samples=n),
        AttackSpec("autoattack", {"version": "standard"}, eps, "AutoAttack", max_samples=n),
    ], "PGD-40 (random start, step eps/4) on CE and CW losses, then standard AutoAttack; cascaded", cascade=True)


def _plain(value: Any) -> Any:
    """Attack parameters as JSON (a callable loss by its name)."""
    if callable(value):
        return getattr(value, "__name__", type(value).__name__)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def evaluate_run(run: Path, protocols, n: int, device: str, cache: Path | None = None) -> dict[str, Any]:
    """The evaluation report of a run's final checkpoint (the papers report the model at the end of their
    schedule); reused from `cache` if nothing changed.

    `protocols` is a list, or a callable of the checkpoint info (to use the run's own defense loss).
    The cache lets several processes evaluate one model each (`--models X`, in parallel) and a
    last call assemble the table from their reports.
    """
    from workbench.checkpoint import read_checkpoint

    ckpt = run / "checkpoints" / "last.pt"
    if callable(protocols):
        data = read_checkpoint(ckpt)
        protocols = protocols({"dataset": data["dataset"], "recipe": data, "path": ckpt})
    key = {"checkpoint": str(ckpt.resolve()), "mtime": ckpt.stat().st_mtime, "n": n,
           "specs": [[p.name, s.label, s.max_samples, s.sweep, _plain(s.params)] for p in protocols for s in p.specs]}
    if cache is not None and cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("cache_key") == json.loads(json.dumps(key, default=str)):
            return cached
    dev = device if device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.time()
    report, _ = evaluate_checkpoint(ckpt, protocols, n=n, device=dev, batch_size=1000)
    report["eval_seconds"] = time.time() - t0
    report["cache_key"] = json.loads(json.dumps(key, default=str))
    records = [r for r in read_metrics(run / "metrics.jsonl") if r.get("kind") == "epoch"]
    report["train"] = {"epochs": len(records), "seconds": sum(r.get("seconds", 0) for r in records),
                       "final": {k: v for k, v in records[-1].items() if k != "time"}}
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(report, default=str))
    return report


def row_value(report: dict[str, Any], protocol: str, label: str, value: float | None) -> float | None:
    for r in report["results"]:
        same = r["protocol"] == protocol and r["label"] == label and not r.get("threshold_of_minimum_norm")
        if same and (value is None or (r["value"] is not None and abs(r["value"] - value) < 1e-9)):
            return r["robust_accuracy"]
    return None


def worst_value(report: dict[str, Any], protocol: str, eps: float) -> float | None:
    for r in report["worst_case"]:
        if r["protocol"] == protocol and abs(r["eps"] - eps) < 1e-9:
            return r["robust_accuracy"]
    return None


def train_minutes(reports: dict[str, Any]) -> str:
    """Epochs and minutes each model trained (summed epoch times from its metrics: resumed runs count once)."""
    return "epochs / training minutes: " + ", ".join(
        f"{k} {r['train']['epochs']} / {r['train']['seconds'] / 60:.1f}" for k, r in reports.items())


def pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"


def save_reports(out: Path, reports: dict[str, Any]) -> None:
    (out / "reports.json").write_text(json.dumps(reports, indent=1, default=str))


def device_name(device: str) -> str:
    if (device in ("auto", "cuda") or device.startswith("cuda")) and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({os.cpu_count()} cores)"


def paper_check_lines(reports: dict[str, Any], keys: list[str], paper: dict, protocol: str) -> list[str]:
    """The closing checks every reproduction prints: cells within 10 points of the paper, and clean >= 99%."""
    gaps = [(abs(100 * row_value(reports[k], protocol, a, e) - v), k, a, e, v)
            for k in keys for (a, e), v in paper.get(k, {}).items()
            if a != "clean" and row_value(reports[k], protocol, a, e) is not None]
    far = sorted((g for g in gaps if g[0] > 10), reverse=True)
    low = [k for k in keys if reports[k]["clean_accuracy"] < 0.99]
    return [f"- Within 10 points of the paper: {len(gaps) - len(far)}/{len(gaps)} cells; misses: "
            + (", ".join(f"{k} {a}@{e} ({100 * row_value(reports[k], protocol, a, e):.1f} vs {v:.1f})"
                         for _, k, a, e, v in far) or "none") + ".",
            f"- Clean ≥ 99%: {len(keys) - len(low)}/{len(keys)}" + (f" ({', '.join(low)} below)" if low else "") + "."]
