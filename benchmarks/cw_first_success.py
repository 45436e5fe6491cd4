"""C&W with and without `first_success` on one checkpoint: the same images fooled, and what it costs.

The PCL papers report C&W-L2 (fixed c, 1000 Adam steps of 0.01) as an accuracy only. The full attack
keeps minimising the norm after an image is fooled; `first_success=True` drops each image at its first
adversarial iterate. Both run here on the first --n test images of the checkpoint's dataset, side by
side, and the script prints the images each fooled, whether the two sets agree, wall seconds and the
(image, Adam step) pairs each computed.

    WORKBENCH_DATA=/work/shared/data python benchmarks/cw_first_success.py RUN/checkpoints/last.pt --n 20
"""

from __future__ import annotations

import argparse
import time

import torch

from attacks.cw import CW
from workbench import load_data, load_model
from workbench.checkpoint import read_checkpoint


def timed(attack: CW, x: torch.Tensor, y: torch.Tensor):
    pairs = []
    attack.on_step = lambda p: pairs.append(p.active)
    t0 = time.perf_counter()
    result = attack.run(x, y)
    return result, time.perf_counter() - t0, sum(pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--n", type=int, default=20, help="first N test images (default 20)")
    ap.add_argument("--c", type=float, default=10.0)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.checkpoint)
    x, y = load_data(read_checkpoint(args.checkpoint)["dataset"], "test")
    x, y = x[:args.n], y[:args.n]
    settings = dict(c=args.c, kappa=0.0, steps=args.steps, lr=args.lr, search_steps=1)
    rows = []
    for first in (False, True):
        result, seconds, pairs = timed(CW(model, first_success=first, **settings), x, y)
        rows.append((first, result, seconds, pairs))
    print(f"C&W c={args.c:g}, {args.steps} steps of {args.lr:g}, first {args.n} test images, "
          f"{args.threads} thread(s): {args.checkpoint}")
    print(f"{'first_success':>13} {'fooled':>7} {'robust %':>8} {'mean L2':>8} {'seconds':>8} {'pairs':>8}")
    for first, r, seconds, pairs in rows:
        mean = float(r.norm[r.success].mean()) if r.success.any() else float("nan")
        print(f"{str(first):>13} {int(r.success.sum()):>7} {100 * r.robust_accuracy:>8.1f} {mean:>8.3f} "
              f"{seconds:>8.1f} {pairs:>8}")
    same = torch.equal(rows[0][1].success, rows[1][1].success)
    print(f"same images fooled: {same}; speed-up {rows[0][2] / max(rows[1][2], 1e-9):.1f}x")


if __name__ == "__main__":
    main()
