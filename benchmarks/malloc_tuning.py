"""Training steps with glibc's default allocator and with `workbench.allocator.keep_freed_memory`, side by side.

Each variant runs in a fresh process (mallopt holds for the process): CNN-6 on MNIST-shaped random data, batch
128, Adam, one torch thread; 5 warm-up steps, then `--steps` timed. Prints ms/step, the user and system CPU
seconds and the minor page faults of the timed steps.

    python benchmarks/malloc_tuning.py [--steps 40] [--model cnn6] [--batch 128]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
tuned = sys.argv[1] == "tuned"
if tuned:
    from workbench.allocator import keep_freed_memory
    assert keep_freed_memory(), "the tuning did not take effect (not glibc?)"
torch.set_num_threads(1)
torch.manual_seed(0)
from workbench.models.registry import create_model
model = create_model(sys.argv[2], in_channels=1, num_classes=10, image_size=28)
opt = torch.optim.Adam(model.parameters(), 1e-3)
x, y = torch.rand(int(sys.argv[3]), 1, 28, 28), torch.randint(0, 10, (int(sys.argv[3]),))
def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
for _ in range(5):
    step()
steps = int(sys.argv[4])
r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
for _ in range(steps):
    step()
dt, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"ms": 1000 * dt / steps, "user": r1.ru_utime - r0.ru_utime, "sys": r1.ru_stime - r0.ru_stime,
                  "faults": r1.ru_minflt - r0.ru_minflt}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--model", default="cnn6")
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args()
    print(f"{args.model}, batch {args.batch}, {args.steps} steps, 1 thread")
    print(f"{'allocator':<10} {'ms/step':>8} {'user s':>7} {'sys s':>6} {'page faults':>12}")
    for variant in ("default", "tuned"):
        out = subprocess.run([sys.executable, "-c", CHILD, variant, args.model, str(args.batch), str(args.steps)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{variant:<10} {r['ms']:>8.0f} {r['user']:>7.1f} {r['sys']:>6.1f} {r['faults']:>12,}")


if __name__ == "__main__":
    main()
