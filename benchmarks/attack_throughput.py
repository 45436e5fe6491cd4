"""Attack throughput: our PGD-40 vs torchattacks' PGD-40 (and ART's, if installed) on the same models.

Two MNIST SmallCNNs (SPEC A7): an undefended one and a PGD-adversarially-trained one,
trained here with the workbench trainer on first use and cached in benchmarks/.cache/
(or given with --plain / --robust). On the first --n test images, same settings for all
(L-inf eps 0.3, 40 steps of 0.01, uniform random start, CE loss, model in eval mode):

- ours:          attacks.PGD (samples leave the batch once fooled; input-only gradients)
- ours-full:     the same with early_stop=False (every sample runs all 40 steps)
- plain loop:    a hand-written PyTorch PGD loop (the reference the others are timed against)
- torchattacks:  torchattacks.PGD
- art:           art.attacks.evasion.ProjectedGradientDescent, if `adversarial-robustness-toolbox` imports

Runs are interleaved (one of each, --repeats times) and the median is reported, with the
robust accuracy each reached. Then an eps sweep (0.1, 0.2, 0.3, 0.4) through the evaluation
engine: carry (default), joint, and four separate runs.

Speed options (issue 7), off by default: `--variants bf16,channels-last,compile` adds one row per
variant of `ours` (`workbench attack --amp bf16 / --channels-last / --compile`; join options with
"+", e.g. bf16+channels-last+compile; "all" = bf16, channels-last, compile and all three together).
Each variant crafts with the model's forward under that option (x and the attack's arithmetic stay
float32); every robust accuracy is then measured with the eager float32 model, so a variant that
weakens the attack shows there. A compiled variant is warmed up first (one untimed run on the first
batch, which compiles the graphs, the dynamic-batch one included) and its compile time is printed.
Channels-last changes nothing on MNIST's one channel (NCHW and NHWC are the same memory then).

    WORKBENCH_DATA=/work/shared/data python benchmarks/attack_throughput.py
    python benchmarks/attack_throughput.py --device cuda --n 10000 --batch-size 2000
    python benchmarks/attack_throughput.py --models robust --variants all --n 500 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attacks import PGD
from workbench import load_data, load_model
from workbench.accel import Precision, compile_model, resolve_amp
from workbench.config.profiles import load_profile
from workbench.evaluation import AttackSpec, Evaluator
from workbench.training import prepare_run, run_training
from workbench.training.reporting import reporter_for

CACHE = Path(__file__).parent / ".cache"
MODELS = {
    # Undefended: 1 epoch of the CCN softmax recipe (about 99% clean).
    "plain": ("sm_mnist", ["epochs=1", "eval.robust_every=0"]),
    # PGD-AT (eps 0.3, 10 steps of 0.03) for 3 epochs on 20k images with Adam: robust enough that
    # most samples survive many PGD steps, which is the expensive case for an attack.
    "robust": ("pgd_at_mnist", ["epochs=3", "data.train_subset=20000", "adv_train.steps=10",
                                "adv_train.step_size=0.03", "eval.robust_every=0", "schedule.name=constant",
                                "optimizer={name: adam, lr: 0.001}"]),
}


def trained(kind: str, device: str) -> Path:
    path = CACHE / f"{kind}.pt"
    if path.exists():
        return path
    profile, overrides = MODELS[kind]
    cfg, src = load_profile(profile, overrides)
    with tempfile.TemporaryDirectory() as tmp:
        run = prepare_run(cfg, Path(tmp), src, device=device)
        print(f"training the {kind} model ({profile} {' '.join(overrides)}) ...", flush=True)
        run_training(run.root, device=device, reporter=reporter_for(sys.stdout))
        CACHE.mkdir(exist_ok=True)
        path.write_bytes(run.last.read_bytes())
    return path


def plain_pgd(model, x, y, eps, alpha, steps, gen):
    x_adv = (x + (2 * torch.rand(x.shape, generator=gen, device=x.device) - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + alpha * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv


VARIANT_OPTIONS = ("bf16", "fp16", "channels-last", "compile")


def parse_variants(text: str) -> list[str]:
    """'bf16,channels-last,bf16+compile' -> the variants, each a '+'-joined set of options."""
    if text.strip() == "all":
        return ["bf16", "channels-last", "compile", "bf16+channels-last+compile"]
    variants = [v.strip() for v in text.split(",") if v.strip()]
    for v in variants:
        parts = v.split("+")
        bad = [p for p in parts if p not in VARIANT_OPTIONS]
        if bad or len(set(parts)) != len(parts) or {"bf16", "fp16"} <= set(parts):
            raise SystemExit(f"--variants: {v!r} is not a '+'-joined set of {', '.join(VARIANT_OPTIONS)} "
                             "(at most one of bf16/fp16)")
    return variants


def variant_runner(model, variant, eps, alpha, steps, device):
    """`ours` with the variant's speed options: (runner, the model it crafts on)."""
    parts = set(variant.split("+"))
    amp = "bf16" if "bf16" in parts else "fp16" if "fp16" in parts else "off"
    precision = Precision(resolve_amp(amp, device), "channels-last" in parts)
    crafted_on = compile_model(model) if "compile" in parts else model
    return lambda x, y, s: PGD(crafted_on, eps=eps, steps=steps, step_size=alpha, seed=s, precision=precision)(x, y)


def make_runners(model, eps, alpha, steps, variants=(), device=torch.device("cpu")):
    runners = {
        "ours": lambda x, y, s: PGD(model, eps=eps, steps=steps, step_size=alpha, seed=s)(x, y),
        "ours-full": lambda x, y, s: PGD(model, eps=eps, steps=steps, step_size=alpha, early_stop=False,
                                         seed=s)(x, y),
        "plain loop": lambda x, y, s: plain_pgd(model, x, y, eps, alpha, steps,
                                                torch.Generator(device=x.device).manual_seed(s)),
    }
    for v in variants:
        runners[f"ours {v}"] = variant_runner(model, v, eps, alpha, steps, device)
    try:
        import torchattacks

        def ta(x, y, s):
            with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
                torch.manual_seed(s)
                return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
        runners["torchattacks"] = ta
    except ImportError:
        print("torchattacks not installed: skipped")
    try:
        import numpy as np
        from art.attacks.evasion import ProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        clf = PyTorchClassifier(model, loss=torch.nn.CrossEntropyLoss(), input_shape=(1, 28, 28), nb_classes=10,
                                clip_values=(0.0, 1.0), device_type="gpu" if next(model.parameters()).is_cuda else "cpu")
        art_pgd = ProjectedGradientDescent(clf, eps=eps, eps_step=alpha, max_iter=steps, num_random_init=1,
                                           batch_size=1000, verbose=False)
        runners["art"] = lambda x, y, s: torch.from_numpy(
            art_pgd.generate(x.cpu().numpy(), y=np.eye(10)[y.cpu().numpy()])).to(x.device)
    except ImportError:
        print("ART not installed (pip install adversarial-robustness-toolbox): skipped")
    return runners


def timed(fn, *args, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn(*args)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def bench_model(kind, path, args, device):
    model = load_model(path, device=device)
    x, y = load_data("mnist", "test")
    x, y = x[:args.n].to(device), y[:args.n].to(device)
    with torch.no_grad():
        clean = (torch.cat([model(xb).argmax(1) for xb in x.split(args.batch_size)]) == y).float().mean().item()
    runners = make_runners(model, args.eps, args.step_size, args.steps, args.variants, device)
    for name in runners:
        if "compile" in name:  # compile outside the timed runs (the graphs for this batch size and the dynamic one)
            _, secs = timed(runners[name], x[:args.batch_size], y[:args.batch_size], 0, device=device)
            print(f"{name}: compile warm-up {secs:.1f} s (not timed below)")
    times = {k: [] for k in runners}
    accs = {k: [] for k in runners}
    for r in range(args.repeats):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for name in order:
            total, robust = 0.0, 0
            for b, (xb, yb) in enumerate(zip(x.split(args.batch_size), y.split(args.batch_size))):
                x_adv, secs = timed(runners[name], xb, yb, 1000 * r + b, device=device)
                total += secs
                with torch.no_grad():
                    robust += int((model(x_adv).argmax(1) == yb).sum())
            times[name].append(total)
            accs[name].append(robust / len(y))
    ref = statistics.median(times["plain loop"])
    base = statistics.median(times["torchattacks"]) if "torchattacks" in times else None
    print(f"\n{kind} model: clean {100 * clean:.2f}%, PGD-{args.steps} eps {args.eps} step {args.step_size}, "
          f"{len(y)} images, batch {args.batch_size}, {device}")
    print("robust %: mean (min-max) over the repeats, each with its own random-start seed")
    width = max(14, *(len(name) + 2 for name in runners))
    print(f"{'attack':<{width}}{'median s':>10}{'images/s':>11}{'robust %':>22}{'x plain':>9}{'x torchattacks':>16}")
    for name in runners:
        med = statistics.median(times[name])
        vs_ta = f"{base / med:.2f}" if base else "-"
        a = accs[name]
        acc = f"{100 * statistics.mean(a):.2f} ({100 * min(a):.1f}-{100 * max(a):.1f})"
        print(f"{name:<{width}}{med:>10.2f}{len(y) / med:>11.0f}{acc:>22}{ref / med:>9.2f}{vs_ta:>16}")
    return model, x, y


def bench_sweep(model, x, y, args, device):
    eps = [0.1, 0.2, 0.3, 0.4]
    spec = lambda e: AttackSpec("pgd", {"steps": args.steps, "step_size": args.step_size}, e, "PGD")
    results = {}
    for mode in ("carry", "joint", "separate"):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if mode == "separate":
            ev = Evaluator(model, x, y, batch_size=args.batch_size)
            accs = []
            for e in eps:
                out = ev.run_spec(spec([e]), "b")
                accs.append(float((ev.clean_correct & ~out.fooled[0]).float().mean()))
        else:
            ev = Evaluator(model, x, y, batch_size=args.batch_size, sweep=mode)
            out = ev.run_spec(spec(eps), "b")
            accs = [float((ev.clean_correct & ~out.fooled[i]).float().mean()) for i in range(len(eps))]
        if device.type == "cuda":
            torch.cuda.synchronize()
        results[mode] = (time.perf_counter() - t0, accs)
    print(f"\neps sweep {eps} through the engine (PGD-{args.steps}, robust model):")
    print(f"{'mode':<10}{'seconds':>9}  robust % per eps")
    for mode, (secs, accs) in results.items():
        print(f"{mode:<10}{secs:>9.2f}  " + " / ".join(f"{100 * a:.1f}" for a in accs))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--step-size", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto")
    p.add_argument("--plain", type=Path, help="checkpoint of an undefended MNIST model")
    p.add_argument("--robust", type=Path, help="checkpoint of an adversarially trained MNIST model")
    p.add_argument("--models", default="robust,plain,sweep", help="which parts to run (comma-separated)")
    p.add_argument("--variants", default="",
                   help="speed variants of ours to time too: bf16, fp16, channels-last, compile, '+'-joined "
                        "combinations (bf16+compile), or all (default: none)")
    args = p.parse_args()
    args.variants = parse_variants(args.variants)
    dev = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto"
                                                                              else args.device)
    device = torch.device(dev)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cores {len(os.sched_getaffinity(0))}")
    parts = set(args.models.split(","))
    robust = None
    if "robust" in parts or "sweep" in parts:
        robust = bench_model("robust", args.robust or trained("robust", dev), args, device)
    if "plain" in parts:
        bench_model("plain", args.plain or trained("plain", dev), args, device)
    if "sweep" in parts:
        bench_sweep(*robust, args, device)


if __name__ == "__main__":
    main()
