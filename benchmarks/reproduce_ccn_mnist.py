"""Reproduce the CCN paper's MNIST FGSM table (Table 1, plus Table 9's BN/LRN rows), ours beside the paper.

Trains SM, LS, BReLU, L2SM, CCN, CCN+LS (and BN, LRN) with the bundled profiles on real MNIST,
then evaluates each best checkpoint with
  - the paper's protocol: FGSM at eps 0.1/0.2/0.3/0.4 on the full test set, at exactly that eps
    ("fixed"), and with Foolbox v1's smallest-eps search over a 0.01 grid ("search", SPEC §4.4);
  - the strong protocol: PGD-40 with random start on CE and CW losses, then standard AutoAttack,
    cascaded, on the first --n-strong test samples.
Writes a markdown table (ours | paper | strong per eps) and checks the paper's ordering
CCN+LS > CCN > L2SM > SM at FGSM eps 0.3.

    python benchmarks/reproduce_ccn_mnist.py                    # short CPU schedule (4 epochs)
    python benchmarks/reproduce_ccn_mnist.py --full --jobs 8    # the paper's 50 epochs (GPU)
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import torch
from reproduction import (
    Model,
    common_args,
    device_name,
    evaluate_run,
    existing_runs,
    model_list,
    pct,
    row_value,
    safe,
    save_reports,
    schedule_overrides,
    strong_protocol,
    train_all,
    train_minutes,
    worst_value,
)

from workbench.evaluation import AttackSpec, Protocol

EPS = [0.1, 0.2, 0.3, 0.4]
PAPER_EPOCHS, SHORT_EPOCHS = 50, 4
# [P4] Table 1 (and Table 9 for BN / LRN): clean, FGSM at 0.1 / 0.2 / 0.3 / 0.4.
PAPER = {
    "SM": (99.50, [92.61, 63.71, 31.76, 19.39]),
    "LS": (99.53, [95.62, 85.13, 44.25, 15.57]),
    "BReLU": (99.54, [95.29, 74.83, 42.51, 19.41]),
    "L2SM": (99.48, [94.51, 79.68, 60.32, 45.16]),
    "CCN": (99.50, [96.99, 91.64, 81.38, 60.65]),
    "CCN+LS": (99.43, [97.26, 93.68, 89.73, 75.95]),
    "BN": (99.58, [88.48, 30.72, 11.20, 9.24]),
    "LRN": (99.28, [88.59, 52.52, 25.61, 13.21]),
}
PROFILES = {"SM": "sm_mnist", "LS": "ls_mnist", "BReLU": "brelu_mnist", "L2SM": "l2sm_mnist", "CCN": "ccn_mnist",
            "CCN+LS": "ccn_ls_mnist", "BN": "bn_mnist", "LRN": "lrn_mnist"}
DEFAULT_MODELS = ["SM", "LS", "BReLU", "L2SM", "CCN", "CCN+LS"]


def protocols(n_strong: int, n_search: int, aa: bool) -> list[Protocol]:
    grid = [round(0.01 * i, 2) for i in range(1, 41)]
    paper = Protocol("paper:ccn", [
        AttackSpec("fgsm", {}, EPS, "FGSM fixed", monotone=False),
        AttackSpec("fgsm", {}, grid, "FGSM search", max_samples=n_search),
    ], "FGSM at exactly eps, and Foolbox's smallest-eps search over a 0.01 grid")
    strong = strong_protocol(EPS, n_strong)
    if not aa:
        strong.specs = strong.specs[:2]
    return [paper, strong]


def main() -> None:
    ap = common_args(__doc__.splitlines()[0], "benchmarks/.repro/ccn_mnist")
    ap.add_argument("--n-search", type=int, default=2000, help="test samples for the FGSM eps search")
    ap.add_argument("--no-autoattack", action="store_true", help="strong protocol without AutoAttack (quick)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    keys = model_list(args.models, list(PROFILES), DEFAULT_MODELS)
    epochs, sets = schedule_overrides(args, PAPER_EPOCHS, SHORT_EPOCHS, [30, 40])
    models = [Model(k, PROFILES[k], sets) for k in keys]
    runs = existing_runs(models, out) if args.eval_only else train_all(models, out, args.device, args.jobs, args.threads)

    reports = {}
    for k in keys:
        reports[k] = evaluate_run(runs[k], protocols(args.n_strong, args.n_search, not args.no_autoattack),
                                  args.n, args.device, out / "reports" / f"{safe(k)}.json")
        r = reports[k]
        print(f"  {k:7s} clean {pct(r['clean_accuracy'])}  FGSM@0.3 {pct(row_value(r, 'paper:ccn', 'FGSM fixed', 0.3))}"
              f"  strong@0.3 {pct(worst_value(r, 'strong', 0.3))}  ({r['eval_seconds']:.0f} s)", flush=True)
    save_reports(out, reports)

    lines = ["### CCN paper, MNIST (Table 1 / Table 9): FGSM accuracy (%), ours beside the paper's", "",
             f"Final checkpoints; {'the paper schedule' if epochs == PAPER_EPOCHS else f'a shortened schedule (lr drops at the paper fractions of {epochs} epochs)'}, "
             f"{device_name(args.device)}; {train_minutes(reports)}. "
             f"FGSM on the first {args.n} test images; eps search on {args.n_search}; strong on {args.n_strong}.",
             "", ("| model | clean | paper | " + " | ".join(f"ε={e} fixed | search | paper | **strong**" for e in EPS)
                  + " |"),
             "|---|---:|---:|" + "---:|---:|---:|---:|" * len(EPS)]
    for k in keys:
        r = reports[k]
        cells = [k, pct(r["clean_accuracy"]), f"{PAPER[k][0]:.2f}"]
        for i, e in enumerate(EPS):
            cells += [pct(row_value(r, "paper:ccn", "FGSM fixed", e)), pct(row_value(r, "paper:ccn", "FGSM search", e)),
                      f"{PAPER[k][1][i]:.2f}", f"**{pct(worst_value(r, 'strong', e))}**"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Strong = robust to PGD-40 (random start, step ε/4) on CE, then on the CW margin, "
              + ("then standard AutoAttack (cascaded)." if not args.no_autoattack else "(AutoAttack skipped: --no-autoattack)."), ""]

    # The paper's claims, checked.
    fixed = {k: row_value(reports[k], "paper:ccn", "FGSM fixed", 0.3) for k in keys}
    order = [k for k in ("CCN+LS", "CCN", "L2SM", "SM") if k in keys]
    holds = all(fixed[a] > fixed[b] for a, b in pairwise(order))
    if len(order) > 1:
        lines.append(f"- Paper order {' > '.join(order)} at FGSM ε=0.3 (fixed): "
                     f"{'holds' if holds else 'does NOT hold'} ({', '.join(f'{k} {pct(fixed[k])}' for k in order)}).")
    gaps = []
    for k in keys:
        for i, e in enumerate(EPS):
            ours = row_value(reports[k], "paper:ccn", "FGSM fixed", e)
            gaps.append((abs(100 * ours - PAPER[k][1][i]), k, e, 100 * ours, PAPER[k][1][i]))
    far = [g for g in gaps if g[0] > 10]
    lines.append(f"- Within 10 points of the paper: {len(gaps) - len(far)}/{len(gaps)} cells; misses: "
                 + (", ".join(f"{k} ε={e} ({o:.1f} vs {p:.2f})" for _, k, e, o, p in sorted(far, reverse=True))
                    or "none") + ".")
    clean_ok = [k for k in keys if reports[k]["clean_accuracy"] >= 0.99]
    lines.append(f"- Clean ≥ 99%: {len(clean_ok)}/{len(keys)} ({', '.join(k for k in keys if k not in clean_ok) or 'all'}"
                 f"{' below' if len(clean_ok) < len(keys) else ''}).")
    alphas = {k: {a: round(v, 2) for a, v in reports[k]["train"]["final"].items() if a.startswith("alpha_")}
              for k in keys}
    for k, a in alphas.items():
        if a:
            lines.append(f"- learned α, {k}: " + ", ".join(f"{n.removeprefix('alpha_')} {v}" for n, v in a.items()))
    table = "\n".join(lines) + "\n"
    Path(args.table or out / "results.md").write_text(table)
    print("\n" + table)


if __name__ == "__main__":
    main()
