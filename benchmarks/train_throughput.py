"""Training throughput (images/s) with the speed options on and off, side by side, in one run.

Workloads, each trained through the real path (`prepare_run` + `run_training`, the same as `workbench train`):

- small_cnn on MNIST (real data from WORKBENCH_DATA), clean and PGD-10 adversarial training;
- resnet56 (or --resnet NAME, e.g. wrn34_10) on CIFAR-shaped data (3x32x32, 10 classes, random uint8 images
  registered in this process as the dataset `cifar_shaped`: throughput does not depend on the pixels),
  clean and PGD-10 adversarial training.

Variants: float32 eager with cuDNN autotuning off (`baseline`), then each option alone (`amp` = bf16 autocast,
`channels_last`, `compile`, `cudnn_benchmark`), then all of them (`all`). Each run trains `--epochs` epochs of
`--subset` images; the first epoch (compilation, autotuning, allocator warm-up) is dropped and the median of
the others is reported, from the trainer's own per-epoch training seconds (evaluation is off).

`--mfu` adds the model-FLOPs utilisation of one resnet training step: FLOPs counted by
torch.utils.flop_counter for forward+backward, divided by the step time, as a fraction of the rate this device
measures for a large matmul in the same dtype (bf16 on CUDA: the issue's target is >= 40% for a wide resnet at
batch 512: `--mfu --resnet wrn34_10 --mfu-batch 512 --device cuda`).

    WORKBENCH_DATA=/work/shared/data python benchmarks/train_throughput.py            # CPU, small sizes
    python benchmarks/train_throughput.py --device cuda --subset 10240 --epochs 3 --mfu --resnet wrn34_10
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from workbench.accel import autocast, channels_last
from workbench.config.profiles import validate_config
from workbench.data import DATASETS, DatasetSpec
from workbench.models import create_model
from workbench.runs import read_metrics
from workbench.training.session import prepare_run, run_training

VARIANTS = {
    "baseline": {"amp": "off", "channels_last": False, "compile": False, "cudnn_benchmark": False},
    "amp": {"amp": "bf16", "channels_last": False, "compile": False, "cudnn_benchmark": False},
    "channels_last": {"amp": "off", "channels_last": True, "compile": False, "cudnn_benchmark": False},
    "compile": {"amp": "off", "channels_last": False, "compile": True, "cudnn_benchmark": False},
    "cudnn_benchmark": {"amp": "off", "channels_last": False, "compile": False, "cudnn_benchmark": True},
    "all": {"amp": "bf16", "channels_last": True, "compile": True, "cudnn_benchmark": True},
}


def register_cifar_shaped(n: int = 2048) -> None:
    if "cifar_shaped" in DATASETS:
        return
    gen = torch.Generator().manual_seed(0)

    def load(root: Path, split: str, download: bool):
        del root, download
        size = n if split == "train" else 512
        return (torch.randint(0, 256, (size, 3, 32, 32), generator=gen, dtype=torch.uint8),
                torch.randint(0, 10, (size,), generator=gen))

    DATASETS.register("cifar_shaped", DatasetSpec(
        name="cifar_shaped", channels=3, num_classes=10, image_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
        augment="none", description="random CIFAR-shaped images (benchmarks only)", loader=load))


def config(dataset: str, model: str, adversarial: bool, options: dict, args) -> dict:
    eps = 0.3 if dataset == "mnist" else 8 / 255
    return {
        "name": "bench", "dataset": dataset, "model": model, "epochs": args.epochs, "batch_size": args.batch,
        "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9},
        "adv_train": {"attack": "pgd", "eps": eps, "steps": 10} if adversarial else {"attack": "none"},
        "data": {"train_subset": args.subset if dataset == "mnist" else args.resnet_subset, "augment": "none"},
        "eval": {"clean_every": 0, "robust_every": 0}, "log_every": 1000, "performance": options,
    }


def images_per_second(cfg: dict, device: str, data_root: str | None) -> tuple[float, float]:
    """(median images/s over epochs after the first, first epoch's seconds) of one real run."""
    run_cfg = validate_config(cfg, "benchmark")
    with tempfile.TemporaryDirectory() as tmp:
        run = prepare_run(run_cfg, Path(tmp), data_root=data_root, device=device)
        state = run_training(run.root, device=device, data_root=data_root)
        if state != "finished":
            raise SystemExit(f"benchmark run ended {state}")
        seconds = [r["seconds"] for r in read_metrics(run.metrics) if r["kind"] == "epoch"]
    n = cfg["data"]["train_subset"]
    steady = seconds[1:] or seconds
    return n / statistics.median(steady), seconds[0]


def matmul_rate(device: torch.device, dtype: torch.dtype, size: int) -> float:
    """FLOP/s of a size x size matmul in `dtype` on `device` (the achievable peak we compare against)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 20 if device.type == "cuda" else 3
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * size ** 3 * reps / (time.perf_counter() - t)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def mfu(model_name: str, batch: int, device: torch.device, amp: bool, compiled: bool, use_cl: bool) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    model = create_model(model_name, 3, 10, 32).to(device)
    if use_cl:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compiled else model
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, 32, 32, device=device)
    x = channels_last(x) if use_cl else x
    y = torch.randint(0, 10, (batch,), device=device)
    dtype = torch.bfloat16 if amp else None

    def step():
        with autocast(device, dtype):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:  # eager count: compile does not change the model's FLOPs
        with autocast(device, dtype):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
    flops = counter.get_total_flops()
    for _ in range(3):
        step()
    sync(device)
    reps = 10 if device.type == "cuda" else 2
    t = time.perf_counter()
    for _ in range(reps):
        step()
    sync(device)
    step_s = (time.perf_counter() - t) / reps
    peak = matmul_rate(device, torch.bfloat16 if amp else torch.float32, 8192 if device.type == "cuda" else 1024)
    return {"flops": flops, "step_s": step_s, "achieved": flops / step_s, "peak": peak,
            "fraction": flops / step_s / peak}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run; the first is dropped (warm-up)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--subset", type=int, default=1024, help="MNIST training images per epoch")
    ap.add_argument("--resnet", default="resnet56", help="the CIFAR-shaped model (resnet56, wrn34_10, madry_resnet)")
    ap.add_argument("--resnet-subset", type=int, default=256, help="CIFAR-shaped training images per epoch")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of: " + ", ".join(VARIANTS))
    ap.add_argument("--workloads", default="mnist-clean,mnist-pgd10,cifar-clean,cifar-pgd10")
    ap.add_argument("--mfu", action="store_true", help="also the resnet step's fraction of the matmul rate")
    ap.add_argument("--mfu-batch", type=int, default=512)
    ap.add_argument("--data-root", default=os.environ.get("WORKBENCH_DATA"))
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    register_cifar_shaped(max(args.resnet_subset, args.batch))
    variants = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; batch {args.batch}; epochs {args.epochs} (first dropped)")
    workloads = {"mnist-clean": ("mnist", "small_cnn", False), "mnist-pgd10": ("mnist", "small_cnn", True),
                 "cifar-clean": ("cifar_shaped", args.resnet, False), "cifar-pgd10": ("cifar_shaped", args.resnet, True)}
    rows = []
    for w in args.workloads.split(","):
        dataset, model, adversarial = workloads[w.strip()]
        base = None
        for v in variants:
            if device.type != "cuda" and v == "cudnn_benchmark":
                continue  # a cuDNN setting: nothing to measure on the CPU
            ips, first = images_per_second(config(dataset, model, adversarial, VARIANTS[v], args), str(device),
                                           args.data_root)
            base = base or ips
            rows.append((w, v, ips, ips / base, first))
            print(f"{w:12s} {model:10s} {v:16s} {ips:10.1f} img/s  x{ips / base:5.2f}   (first epoch {first:.1f}s)",
                  flush=True)
    if args.mfu:
        for label, amp, comp, cl in (("fp32 eager", False, False, False), ("bf16", True, False, False),
                                     ("bf16+channels_last+compile", True, True, True)):
            if device.type != "cuda" and amp:
                continue  # CPU bf16 matmul is emulated on most CPUs: no meaningful peak
            r = mfu(args.resnet, args.mfu_batch, device, amp, comp, cl)
            print(f"MFU {args.resnet} batch {args.mfu_batch} {label:28s}: {r['flops'] / 1e9:8.1f} GFLOP/step, "
                  f"{r['step_s'] * 1e3:8.1f} ms/step, {r['achieved'] / 1e12:7.2f} TFLOP/s of "
                  f"{r['peak'] / 1e12:7.2f} measured matmul peak = {100 * r['fraction']:5.1f}%", flush=True)


if __name__ == "__main__":
    main()
