"""Reproduce the PC-LC paper's MNIST results (Table 1, and Tables 3/5 with --models CE,PC,CE+AT,PC+AT).

Trains LeNet-5 with cross-entropy (2T epochs) and with PC loss + logit constraints (T CE warm-up
+ T PC-LC), optionally both with 1:1 FGSM adversarial training (eps ~ U[0.1, 0.3]), on real MNIST,
then evaluates each best checkpoint with
  - the paper's protocol (`pc` preset): FGSM, BIM-10, PGD-40 (random start), MIM-40 at eps
    0.1/0.2/0.3 with step 0.01 (BIM eps/10) on the full test set; C&W-L2 (kappa 0, 100 iterations)
    and SPSA (eps 0.3) on the first 1000;
  - the adaptive attack: PGD-40 on the PC-LC objective itself (the defense's attack_loss);
  - the strong protocol: PGD-40 with random start on CE and CW losses, then standard AutoAttack,
    cascaded, on the first --n-strong samples.
Writes a markdown table (ours | paper | strong) and checks "PC > CE on every attack".

    python benchmarks/reproduce_pc_mnist.py                               # 20 + 20 epochs on CPU
    python benchmarks/reproduce_pc_mnist.py --full --jobs 4 --models CE,PC,CE+AT,PC+AT
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from reproduction import (
    Model,
    common_args,
    device_name,
    evaluate_run,
    existing_runs,
    model_list,
    paper_check_lines,
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

from workbench.evaluation import AttackSpec, Protocol, adaptive_loss, build_protocol

EPS = [0.1, 0.2, 0.3]
PAPER_EPOCHS, SHORT_EPOCHS = 100, 40
# (profile, overrides, lr milestones of the 100-epoch paper schedule: x0.2 at 1/3 and 2/3 of each phase)
PROFILES = {"CE": ("pc_ce_mnist", [], [33, 67]), "PC": ("pc_mnist", [], [17, 33]),
            "CE+AT": ("pc_at_mnist", ["defense=softmax"], [33, 67]), "PC+AT": ("pc_at_mnist", [], [17, 33])}
ATTACKS = ["FGSM", "BIM-10", "PGD-40", "MIM-40"]
# [P2] Table 1 (MNIST), Table 3 (SPSA, black-box) and Table 5 (with adversarial training, eps 0.3).
PAPER: dict[str, dict[tuple[str, float | None], float]] = {
    "CE": {("clean", None): 99.2, ("C&W-100", None): 42.2, ("SPSA", 0.3): 72.9,
           **{(a, e): v for a, vals in {"FGSM": [71.5, 51.6, 31.8], "BIM-10": [52.8, 4.5, 1.5],
                                        "PGD-40": [49.0, 3.3, 0.8], "MIM-40": [49.8, 5.0, 1.5]}.items()
              for e, v in zip(EPS, vals)}},
    "PC": {("clean", None): 99.2, ("C&W-100", None): 78.0, ("SPSA", 0.3): 95.7,
           **{(a, e): v for a, vals in {"FGSM": [80.5, 76.3, 65.0], "BIM-10": [72.0, 48.6, 39.5],
                                        "PGD-40": [72.3, 50.2, 39.7], "MIM-40": [73.8, 54.0, 43.3]}.items()
              for e, v in zip(EPS, vals)}},
    "CE+AT": {("BIM-10", 0.3): 27.0, ("PGD-40", 0.3): 3.2, ("MIM-40", 0.3): 10.8, ("C&W-100", None): 75.5,
              ("SPSA", 0.3): 77.3},
    "PC+AT": {("BIM-10", 0.3): 86.1, ("PGD-40", 0.3): 72.3, ("MIM-40", 0.3): 78.8, ("C&W-100", None): 96.4,
              ("SPSA", 0.3): 97.1},
}


def protocols(n_strong: int, aa: bool, adaptive: bool, info: dict) -> list[Protocol]:
    paper = build_protocol("pc", "mnist", EPS)
    out = [paper]
    if adaptive:
        loss = adaptive_loss(info["recipe"], info["path"])  # the run's own PC-LC objective (its xi and lambda)
        out.append(Protocol("adaptive", [AttackSpec("pgd", {"steps": 40, "step_size": 0.01, "loss": loss}, EPS,
                                                    "PGD-40 PC-LC loss", max_samples=n_strong)],
                            "PGD on the defense's own training objective"))
    strong = strong_protocol(EPS, n_strong)
    if not aa:
        strong.specs = strong.specs[:2]
    return [*out, strong]


def main() -> None:
    ap = common_args(__doc__.splitlines()[0], "benchmarks/.repro/pc_mnist")
    ap.add_argument("--no-autoattack", action="store_true", help="strong protocol without AutoAttack (quick)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    keys = model_list(args.models, list(PROFILES), ["CE", "PC"])
    models = []
    for k in keys:
        profile, overrides, milestones = PROFILES[k]
        epochs, sets = schedule_overrides(args, PAPER_EPOCHS, SHORT_EPOCHS, milestones)
        if epochs == PAPER_EPOCHS:
            sets.append(f"schedule.milestones={milestones}")
        models.append(Model(k, profile, overrides + sets))
    runs = existing_runs(models, out) if args.eval_only else train_all(models, out, args.device, args.jobs, args.threads)

    reports = {}
    for k in keys:
        chosen = partial(protocols, args.n_strong, not args.no_autoattack, k.startswith("PC"))
        reports[k] = evaluate_run(runs[k], chosen,
                                  args.n, args.device, out / "reports" / f"{safe(k)}.json")
        r = reports[k]
        print(f"  {k:6s} clean {pct(r['clean_accuracy'])}  PGD-40@0.3 {pct(row_value(r, 'paper:pc', 'PGD-40', 0.3))}"
              f"  strong@0.3 {pct(worst_value(r, 'strong', 0.3))}  ({r['eval_seconds']:.0f} s)", flush=True)
    save_reports(out, reports)

    header = " | ".join(f"{k} | paper | **{k} strong**" for k in keys)
    lines = ["### PC-LC paper, MNIST: accuracy (%) under attack, ours beside the paper's", "",
             f"LeNet-5, final checkpoints; {'the paper schedule' if epochs == PAPER_EPOCHS else 'a shortened schedule'} "
             f"(PC models: {epochs // 2} CE + {epochs - epochs // 2} PC-LC epochs), {device_name(args.device)}; "
             f"{train_minutes(reports)}. Gradient attacks on the first {args.n} test images, C&W and SPSA on "
             f"{min(args.n, 1000)}, adaptive and strong on {min(args.n, args.n_strong)}; the strong column is on "
             "that subset, so read it against the paper-protocol column with some sampling noise.",
             "", f"| attack | ε | {header} |", "|---|---:|" + "---:|---:|---:|" * len(keys)]

    def cells(k: str, label: str, e: float | None, protocol: str = "paper:pc") -> list[str]:
        ours = reports[k]["clean_accuracy"] if label == "clean" else row_value(reports[k], protocol, label, e)
        paper = PAPER.get(k, {}).get((label, e))
        strong = worst_value(reports[k], "strong", e) if e is not None else None
        return [pct(ours), "—" if paper is None else f"{paper:.1f}", f"**{pct(strong)}**" if e is not None else ""]

    lines.append("| clean | | " + " | ".join(" | ".join(cells(k, "clean", None)) for k in keys) + " |")
    for a in ATTACKS:
        for e in EPS:
            lines.append(f"| {a} | {e} | " + " | ".join(" | ".join(cells(k, a, e)) for k in keys) + " |")
    lines.append("| C&W-100 (κ=0) | | " + " | ".join(" | ".join(cells(k, "C&W-100", None)) for k in keys) + " |")
    lines.append("| SPSA | 0.3 | " + " | ".join(" | ".join(cells(k, "SPSA", 0.3)) for k in keys) + " |")
    for e in EPS:
        lines.append(f"| PGD-40 on PC-LC loss (adaptive) | {e} | " + " | ".join(
            " | ".join(cells(k, "PGD-40 PC-LC loss", e, "adaptive")) if k.startswith("PC") else "— | — | —"
            for k in keys) + " |")
    lines += ["", "Strong = robust to PGD-40 (random start, step ε/4) on CE, then on the CW margin, "
              + ("then standard AutoAttack (cascaded)." if not args.no_autoattack else "(AutoAttack skipped)."),
              "C&W and SPSA accuracy is the attack-failure rate (minimum-norm C&W returns the input when it fails).", ""]

    for base, ours in (("CE", "PC"), ("CE+AT", "PC+AT")):
        if base in keys and ours in keys:
            labels = [(a, e) for a in ATTACKS for e in EPS] + [("C&W-100", None), ("SPSA", 0.3)]
            wins = [(a, e) for a, e in labels
                    if (row_value(reports[ours], "paper:pc", a, e) or 0) > (row_value(reports[base], "paper:pc", a, e) or 0)]
            lines.append(f"- {ours} > {base} under the paper's protocol: {len(wins)}/{len(labels)} attacks"
                         + ("" if len(wins) == len(labels) else
                            f" (not: {', '.join(f'{a}@{e}' for a, e in labels if (a, e) not in wins)})") + ".")
            s_wins = sum((worst_value(reports[ours], "strong", e) or 0) > (worst_value(reports[base], "strong", e) or 0)
                         for e in EPS)
            lines.append(f"- {ours} > {base} under the strong protocol: {s_wins}/{len(EPS)} eps ("
                         + ", ".join(f"ε={e}: {pct(worst_value(reports[ours], 'strong', e))} vs "
                                     f"{pct(worst_value(reports[base], 'strong', e))}" for e in EPS) + ").")
    lines += paper_check_lines(reports, keys, PAPER, "paper:pc")
    table = "\n".join(lines) + "\n"
    Path(args.table or out / "results.md").write_text(table)
    print("\n" + table)


if __name__ == "__main__":
    main()
