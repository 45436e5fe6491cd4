"""One rank of a data-parallel run, started by torchrun (see distributed.py): `python -m workbench.training.worker RUN`."""

from __future__ import annotations

import argparse
import sys

from ..allocator import keep_freed_memory
from ..errors import WorkbenchError
from .distributed import close_process_group, exit_rank


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()
    parser = argparse.ArgumentParser(prog="workbench.training.worker")
    parser.add_argument("run")
    parser.add_argument("--device-type", choices=("cpu", "cuda"), required=True)
    parser.add_argument("--data-root")
    args = parser.parse_args(argv)

    from ..runs import open_run
    from .distributed import device_for, init_from_env
    from .reporting import reporter_for
    from .session import load_run_config, run_training

    ranks, clean = None, False
    try:
        cfg = load_run_config(open_run(args.run))
        ranks = init_from_env(args.device_type, cfg.distributed.backend)
        device = device_for(ranks, args.device_type)
        state = run_training(args.run, device=str(device), data_root=args.data_root,
                             reporter=reporter_for(sys.stdout) if ranks.main else None, ranks=ranks, locked=False)
        clean = True
    except WorkbenchError as exc:
        if ranks is None or ranks.main:
            print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        close_process_group(clean)
    return 1 if state == "failed" else 0


if __name__ == "__main__":
    exit_rank(main())
