"""Training-loop overhead: our Trainer vs a bare hand-written PyTorch loop.

Both train the same model (small_cnn, as built for profiles/sm_mnist.yaml) on the same
MNIST images with the same batch size and SGD settings, in one process, with the same
torch thread count, on the same device. No adversarial training, no evaluation.

- bare:    the training images already as a float [0, 1] tensor on the device;
           per epoch a `torch.randperm` order, then per batch: slice, forward,
           cross-entropy, zero_grad, backward, step. Nothing else.
- trainer: the real path: `load_profile("sm_mnist", overrides)`, `prepare_run` into a
           temporary folder, `run_training(..., device=...)`, with clean and robust
           evaluation switched off. Its per-epoch training seconds are the trainer's
           own `"seconds"` of the `kind == "epoch"` records in the run's metrics.jsonl
           (training loop only: evaluation and the end-of-epoch checkpoint are outside it).

Runs alternate (bare, trainer, then trainer, bare, ...) `--repeats` times; with more
than one epoch the first epoch of every run is dropped as warm-up, and the median of the
remaining epoch times is compared (a "fastest epoch" row is printed too: other processes
only slow epochs down). Each run prints the CPU cores its process actually got; on CPU a
WARNING says when other processes competed for them.

    WORKBENCH_DATA=/work/shared/data python benchmarks/train_overhead.py
    python benchmarks/train_overhead.py --epochs 3 --subset 0 --repeats 3 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from workbench.config.profiles import load_profile
from workbench.data import DATASETS, load_data
from workbench.models import create_model
from workbench.training.session import prepare_run, run_training

PROFILE = "sm_mnist"
TARGET_PCT = 5.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def profile_config(epochs: int, subset: int):
    """The sm_mnist config as the trainer will see it (evaluation off, subset, epochs)."""
    overrides = [f"epochs={epochs}", "eval.clean_every=0", "eval.robust_every=0"]
    if subset:
        overrides.append(f"data.train_subset={subset}")
    return load_profile(PROFILE, overrides)


# -- bare loop ------------------------------------------------------------------------------
def run_bare(cfg, x: torch.Tensor, y: torch.Tensor, epochs: int, device: torch.device) -> list[float]:
    """Seconds of each epoch of a hand-written loop; x, y already on `device`."""
    torch.manual_seed(cfg.seed)
    spec = DATASETS.get(cfg.dataset)
    norm = cfg.model.normalize  # sm_mnist: {mean: [0.5], std: [1.0]}, part of the model as in the trainer
    model = create_model("small_cnn", spec.channels, spec.num_classes, spec.image_size,
                         normalize=(norm["mean"], norm["std"]) if isinstance(norm, dict) else None,
                         **cfg.model.options).to(device)
    o = cfg.optimizer
    opt = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay,
                          nesterov=o.nesterov and o.momentum > 0)
    model.train()
    n, bs = len(y), cfg.batch_size
    times = []
    for _ in range(epochs):
        sync(device)
        t0 = time.perf_counter()
        order = torch.randperm(n, device=device)
        for lo in range(0, n, bs):
            idx = order[lo:lo + bs]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        times.append(time.perf_counter() - t0)
    return times


# -- our trainer ----------------------------------------------------------------------------
def run_trainer(epochs: int, subset: int, device: torch.device, data_root: str | None) -> tuple[list[float], float]:
    """(the trainer's own per-epoch training seconds, wall seconds of prepare_run + run_training)."""
    cfg, path = profile_config(epochs, subset)
    with tempfile.TemporaryDirectory(prefix="wb-overhead-") as tmp:
        sync(device)
        t0 = time.perf_counter()
        run = prepare_run(cfg, Path(tmp), profile=path, data_root=data_root, device=str(device))
        state = run_training(run.root, device=str(device), data_root=data_root)
        sync(device)
        wall = time.perf_counter() - t0
        if state != "finished":
            raise SystemExit(f"trainer run ended {state!r}, not 'finished'")
        records = [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]
    seconds = [r["seconds"] for r in sorted((r for r in records if r.get("kind") == "epoch"), key=lambda r: r["epoch"])]
    if len(seconds) != epochs:
        raise SystemExit(f"expected {epochs} epoch records in metrics.jsonl, found {len(seconds)}")
    return seconds, wall


# -- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2, help="epochs per run (default 2; the first is warm-up when > 1)")
    p.add_argument("--subset", type=int, default=20000, help="first N training images (default 20000; 0 = all 60000)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--repeats", type=int, default=2, help="alternating bare/trainer run pairs (default 2)")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads for both (default: torch's default)")
    p.add_argument("--data", default=None, help="data folder (default: $WORKBENCH_DATA or the cache folder)")
    args = p.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1 or args.subset < 0:
        p.error("--epochs and --repeats must be >= 1, --subset >= 0")

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    cfg, _ = profile_config(args.epochs, args.subset)
    if cfg.adv_train.enabled:
        raise SystemExit(f"profile {PROFILE} has adversarial training on; this benchmark wants it off")

    # The bare loop's data: float [0, 1] on the device, loaded once, outside any timer.
    x, y = load_data(cfg.dataset, "train", root=args.data)
    if args.subset:
        x, y = x[: args.subset], y[: args.subset]
    x, y = x.contiguous().to(device), y.to(device)
    n = len(y)
    batches = (n + cfg.batch_size - 1) // cfg.batch_size

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device: {device} ({dev_name})   torch {torch.__version__}   threads {torch.get_num_threads()}"
          f"   interop threads {torch.get_num_interop_threads()}")
    print(f"workload: {PROFILE} small_cnn, {n} images, batch {cfg.batch_size} ({batches} steps/epoch), "
          f"SGD lr {cfg.optimizer.lr} momentum {cfg.optimizer.momentum} wd {cfg.optimizer.weight_decay}, "
          f"{args.epochs} epochs x {args.repeats} repeats, evaluation off")

    skip = 1 if args.epochs > 1 else 0
    bare_all: list[float] = []
    trainer_all: list[float] = []
    walls: list[float] = []
    trainer_sums: list[float] = []
    cores_used: list[float] = []  # process CPU seconds / wall seconds per run: < threads when others compete
    for r in range(args.repeats):
        order = ("bare", "trainer") if r % 2 == 0 else ("trainer", "bare")
        for which in order:
            c0, w0 = time.process_time(), time.perf_counter()
            if which == "bare":
                t = run_bare(cfg, x, y, args.epochs, device)
                bare_all += t[skip:]
                extra = ""
            else:
                t, wall = run_trainer(args.epochs, args.subset, device, args.data)
                trainer_all += t[skip:]
                walls.append(wall)
                trainer_sums.append(sum(t))
                extra = f"   wall {wall:.2f}s"
            cores = (time.process_time() - c0) / (time.perf_counter() - w0)
            cores_used.append(cores)
            print(f"  repeat {r + 1} {which:7s} epochs: " + "  ".join(f"{s:6.2f}s" for s in t)
                  + f"{extra}   (cpu use {cores:.2f} cores, load {os.getloadavg()[0]:.2f})", flush=True)

    bare, ours = statistics.median(bare_all), statistics.median(trainer_all)
    overhead = 100.0 * (ours - bare) / bare
    bare_min, ours_min = min(bare_all), min(trainer_all)
    overhead_min = 100.0 * (ours_min - bare_min) / bare_min
    wall = statistics.median(walls)
    setup = statistics.median(w - s for w, s in zip(walls, trainer_sums))

    print()
    print(f"median of {len(bare_all)} epochs each" + (" (first epoch of each run dropped as warm-up)" if skip else ""))
    print(f"{'':24s}{'bare loop':>12s}{'trainer':>12s}{'overhead':>12s}")
    print(f"{'seconds / epoch':24s}{bare:12.3f}{ours:12.3f}{overhead:11.1f}%")
    print(f"{'images / s':24s}{n / bare:12.0f}{n / ours:12.0f}")
    print(f"{'ms / step':24s}{1e3 * bare / batches:12.2f}{1e3 * ours / batches:12.2f}")
    print(f"{'fastest epoch (s)':24s}{bare_min:12.3f}{ours_min:12.3f}{overhead_min:11.1f}%")
    print()
    print(f"trainer wall time of the whole call (prepare_run + run_training, {args.epochs} epochs): {wall:.2f}s (median)")
    print(f"  of which outside its epoch timers: {setup:.2f}s (reading MNIST train+test from disk, model and optimizer "
          f"build, run folder files, end-of-epoch checkpoint save with git provenance, status/metrics writes)")
    if device.type == "cpu" and min(cores_used) < 0.85 * torch.get_num_threads():
        print(f"WARNING: some runs got only {min(cores_used):.2f} of {torch.get_num_threads()} cores: other processes "
              "competed for the CPU and those timings are inflated; rerun on an idle machine (or trust the fastest-epoch row)")
    print(f"overhead: {overhead:.1f}% (target <= {TARGET_PCT:g}%)")

if __name__ == "__main__":
    main()
