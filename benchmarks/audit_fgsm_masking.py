"""The audit on a real case of gradient masking: single-step (FGSM) adversarial training.

FGSM training with a large eps is known to mask gradients ("catastrophic overfitting"):
the model learns to make the one-step linearization useless, so PGD from a random start
stalls while better optimizers (APGD) and gradient-free attacks (Square) still break it.
Starting from the undefended SmallCNN of attack_throughput.py (trained on first use),
this fine-tunes 2 epochs with FGSM examples (eps 0.3, every sample adversarial, Adam 1e-3),
then runs `audit_model` and the attacks side by side. Exit status 1 if the audit does not
flag the model.

    WORKBENCH_DATA=/work/shared/data python benchmarks/audit_fgsm_masking.py
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attacks import FGSM
from workbench import load_data, load_model
from workbench.evaluation.audit import audit_model

sys.path.insert(0, str(Path(__file__).parent))
from attack_throughput import trained


def fgsm_finetune(model, x, y, eps: float, epochs: int, batch_size: int = 128, seed: int = 0):
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    attack = FGSM(model, eps=eps, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(y), generator=gen).to(y.device)
        for lo in range(0, len(y), batch_size):
            idx = order[lo:lo + batch_size]
            xb, yb = x[idx], y[idx]
            x_adv = attack(xb, yb)
            model.train()
            loss = F.cross_entropy(model(x_adv), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        print(f"FGSM fine-tune epoch {epoch + 1}/{epochs}: last loss {loss.item():.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    for p in model.parameters():
        p.grad = None
    return model


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    model = load_model(trained("plain", args.device), device=device)
    x, y = load_data("mnist", "train")
    model = fgsm_finetune(model, x.to(device), y.to(device), args.eps, args.epochs)
    xt, yt = load_data("mnist", "test")
    xt, yt = xt[:args.n].to(device), yt[:args.n].to(device)
    t0 = time.perf_counter()
    result = audit_model(model, xt, yt, dataset="mnist", eps=args.eps, queries=args.queries)
    print(f"\naudit of the FGSM-trained SmallCNN (n={args.n}, clean {100 * result['clean_accuracy']:.1f}%, "
          f"{time.perf_counter() - t0:.0f} s):")
    for r in result["results"]:
        print(f"  {r['label']:<14} eps {r['value']:<6.3g} robust {100 * r['robust_accuracy']:5.1f}%")
    for c in result["checks"]:
        print(f"  [{c['status']:>4}] {c['name']}: {c['detail']}")
    print(f"verdict: {result['verdict']}")
    sys.exit(0 if result["verdict"] == "warn" else 1)


if __name__ == "__main__":
    main()
