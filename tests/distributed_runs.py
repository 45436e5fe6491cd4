"""Trains prepared run folders one after another on every rank of a torchrun job (tests/test_distributed.py):

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed_runs.py RUN [RUN ...]

One torchrun start (process group, imports) serves every defense the test compares.
"""

import sys

from workbench.training.distributed import close_process_group, exit_rank, init_from_env
from workbench.training.session import run_training

ranks = init_from_env("cpu")
clean = False
try:
    for run in sys.argv[1:]:
        state = run_training(run, device="cpu", ranks=ranks, locked=False)
        if ranks.main:
            print(f"{run}: {state}", flush=True)
    clean = True
finally:
    close_process_group(clean)
exit_rank(0)
