"""AutoAttack throughput: ours against torchattacks, per member and for the whole ensemble, in one run.

Three models (trained here with the workbench trainer on first use, cached in benchmarks/.cache/):

- quickstart: the offline `quickstart` profile (digits, tiny CNN, PGD-AT at eps 0.1), all 359 test digits;
- plain:      an undefended MNIST SmallCNN (see attack_throughput.py), the first --n MNIST test images;
- robust:     a PGD-trained MNIST SmallCNN (see attack_throughput.py), the first --n MNIST test images.

Members run on the samples the model classifies correctly (what AutoAttack's first stage gets), with
the published budgets on both sides, so each pair does the same work:

    apgd_ce  100 steps, 1 restart          torchattacks.APGD(steps=100, loss="ce")
    apgd_t   100 steps, 9 target classes   torchattacks.APGDT(steps=100, n_classes=10)
    fab_t    100 steps, 9 target classes   torchattacks.FAB(steps=100, multi_targeted=True)
    square   5000 queries, p_init 0.8      torchattacks.Square(n_queries=5000)

The ensemble rows compare our standard AutoAttack (the published budgets above) with torchattacks'
`AutoAttack(version="standard")` as it ships, whose APGD, APGD-T and FAB-T take torchattacks' default
10 steps (a tenth of the published budget; its Square keeps 5000 queries), and with the same four
torchattacks members at the published budgets in its `MultiAttack`.

Each row gives wall seconds and CPU seconds (process time, which other processes on a shared machine
disturb less), the robust accuracy reached (the model's prediction on the returned points, counted over
all --n samples) and the largest L-inf perturbation. Runs alternate ours / theirs --repeats times and
the fastest of each is kept. `--scale` shrinks every budget (steps and queries) for a quick look; the
numbers in benchmarks/README.md use --scale 1.

    WORKBENCH_DATA=/work/shared/data python benchmarks/autoattack_throughput.py
    python benchmarks/autoattack_throughput.py --models robust --members square --n 100 --scale 0.1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import attack_throughput  # noqa: E402  (shares its model cache and recipes)

import attacks  # noqa: E402
from workbench import load_data, load_model  # noqa: E402
from workbench.config.profiles import load_profile  # noqa: E402
from workbench.training import prepare_run, run_training  # noqa: E402
from workbench.training.reporting import reporter_for  # noqa: E402

MEMBERS = ("apgd_ce", "apgd_t", "fab_t", "square")
DEFAULT_EPS = {"quickstart": 0.1, "plain": 0.1, "robust": 0.3}


def quickstart_model(device: str) -> Path:
    path = attack_throughput.CACHE / "quickstart.pt"
    if not path.exists():
        cfg, src = load_profile("quickstart", [])
        with tempfile.TemporaryDirectory() as tmp:
            run = prepare_run(cfg, Path(tmp), src, device=device)
            print("training the quickstart model ...", flush=True)
            run_training(run.root, device=device, reporter=reporter_for(sys.stdout))
            attack_throughput.CACHE.mkdir(exist_ok=True)
            path.write_bytes(run.best.read_bytes())
    return path


def model_and_data(kind: str, n: int, device: str):
    if kind == "quickstart":
        model = load_model(quickstart_model(device), device)
        x, y = load_data("digits")
    else:
        model = load_model(attack_throughput.trained(kind, device), device)
        x, y = load_data("mnist")
        x, y = x[:n], y[:n]
    return model, x.to(device), y.to(device)


def ours(name: str, model, eps: float, scale: float, seed: int):
    steps, queries = max(1, round(100 * scale)), max(2, round(5000 * scale))
    if name == "ensemble":
        if scale == 1:
            return attacks.AutoAttack(model, eps=eps, seed=seed)
        specs = [("apgd_ce", {"steps": steps}), ("apgd_t", {"steps": steps}), ("fab_t", {"steps": steps}),
                 ("square", {"queries": queries})]
        return attacks.AutoAttack(model, eps=eps, attacks=specs, seed=seed)
    params = {"square": {"queries": queries}}.get(name, {"steps": steps})
    return attacks.create_attack(name, model, eps=eps, seed=seed, **params)


def theirs(name: str, model, eps: float, scale: float, seed: int, shipped: bool = False):
    import torchattacks as ta

    steps, queries = max(1, round(100 * scale)), max(2, round(5000 * scale))
    if name == "ensemble" and shipped:
        return ta.AutoAttack(model, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed)
    build = {
        "apgd_ce": lambda: ta.APGD(model, eps=eps, steps=steps, loss="ce", n_restarts=1, seed=seed),
        "apgd_t": lambda: ta.APGDT(model, eps=eps, steps=steps, n_restarts=1, n_classes=10, seed=seed),
        "fab_t": lambda: ta.FAB(model, eps=eps, steps=steps, multi_targeted=True, n_classes=10, n_restarts=1,
                                seed=seed),
        "square": lambda: ta.Square(model, eps=eps, n_queries=queries, n_restarts=1, seed=seed),
    }
    if name == "ensemble":
        return ta.MultiAttack([build[m]() for m in MEMBERS])
    return build[name]()


def floor_seconds(name: str, model, x, y, scale: float) -> float:
    """The member's model work at its full budget with every row attacked to the end, and nothing else.

    Forward + input-gradient passes (APGD, FAB: one per step and target class) or forward passes (Square:
    one per query) on the whole batch in a bare loop. Both implementations stop early on some rows and
    add their own bookkeeping, so a wall time far above this is overhead, and one below it is early stop."""
    steps, queries = max(1, round(100 * scale)), max(2, round(5000 * scale))
    passes = {"apgd_ce": steps, "apgd_t": 9 * steps, "fab_t": 9 * steps}.get(name)
    t0 = time.perf_counter()
    if passes is None:  # square: forward passes only
        with torch.no_grad():
            for _ in range(queries):
                model(x)
    else:
        for _ in range(passes):
            xg = x.detach().requires_grad_(True)
            torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), y), xg)
    return time.perf_counter() - t0


def timed(attack, x, y):
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):  # torchattacks reseeds globally
        if x.is_cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        x_adv = attack(x, y)
        if x.is_cuda:
            torch.cuda.synchronize()
        return x_adv, time.perf_counter() - wall, time.process_time() - cpu


def measure(model, x, y, runners: dict, repeats: int, n_total: int) -> dict:
    """Fastest of `repeats` alternating runs per runner: seconds, CPU seconds, robust accuracy, max L-inf."""
    out: dict[str, dict] = {}
    names = list(runners)
    for r in range(repeats):
        for label in (names if r % 2 == 0 else names[::-1]):
            x_adv, wall, cpu = timed(runners[label](), x, y)
            with torch.no_grad():
                robust = int((model(x_adv).argmax(1) == y).sum())
            row = {"seconds": wall, "cpu_seconds": cpu, "robust": robust / n_total,
                   "linf": float((x_adv - x).abs().max())}
            if label not in out or wall < out[label]["seconds"]:
                out[label] = row
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="quickstart,plain,robust")
    ap.add_argument("--members", default=",".join(MEMBERS) + ",ensemble")
    ap.add_argument("--n", type=int, default=200, help="MNIST test images (the digits model uses all 359)")
    ap.add_argument("--eps", default="", help="per model, e.g. plain=0.1,robust=0.3 (defaults: %s)" % DEFAULT_EPS)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every budget (steps, queries)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--floor", action="store_true", help="also time the bare model passes of each member's budget")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    eps_of = dict(DEFAULT_EPS)
    for part in filter(None, args.eps.split(",")):
        k, v = part.split("=")
        eps_of[k] = float(v)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"budget scale {args.scale:g}", flush=True)
    rows = []
    for kind in args.models.split(","):
        model, x, y = model_and_data(kind, args.n, args.device)
        eps = eps_of[kind]
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        xc, yc = x[ok], y[ok]
        print(f"\n{kind}: eps {eps:g}, {len(y)} samples, {len(yc)} classified correctly", flush=True)
        print(f"  {'member':9s} {'who':30s} {'wall s':>8s} {'cpu s':>8s} {'robust':>7s} {'max linf':>8s}  speed-up")
        for member in args.members.split(","):
            s = args.seed
            if member == "ensemble":
                runners = {"ours (published budgets)": lambda: ours(member, model, eps, args.scale, s),
                           "torchattacks, published budgets": lambda: theirs(member, model, eps, args.scale, s),
                           "torchattacks AutoAttack as shipped": lambda: theirs(member, model, eps, 1.0, s, True)}
                xs, ys = x, y
            else:
                runners = {"ours": lambda: ours(member, model, eps, args.scale, s),
                           "torchattacks": lambda: theirs(member, model, eps, args.scale, s)}
                xs, ys = xc, yc
            res = measure(model, xs, ys, runners, args.repeats, len(y))
            base = res[next(iter(runners))]
            if member != "ensemble" and args.floor:
                f = floor_seconds(member, model, xs, ys, args.scale)
                print(f"  {member:9s} {'(bare model passes, full budget)':30s} {f:8.1f}", flush=True)
                rows.append({"model": kind, "eps": eps, "member": member, "who": "floor", "seconds": f})
            for label, r in res.items():
                speed = "" if r is base else f"ours {r['seconds'] / base['seconds']:.2f}x faster (wall), " \
                                             f"{r['cpu_seconds'] / base['cpu_seconds']:.2f}x (cpu)"
                print(f"  {member:9s} {label:30s} {r['seconds']:8.1f} {r['cpu_seconds']:8.1f} "
                      f"{100 * r['robust']:6.1f}% {r['linf']:8.4f}  {speed}", flush=True)
                rows.append({"model": kind, "eps": eps, "member": member, "who": label, **r})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
