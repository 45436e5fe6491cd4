"""Data-parallel training on N processes: the launcher (`workbench train --devices N`) and the rank context.

The launcher holds the run lock and starts `torch.distributed.run` (torchrun), which starts one worker
per device (`python -m workbench.training.worker RUN`). Every rank builds the same trainer; DDP averages
the gradients; rank 0 alone writes checkpoints, metrics and status. The launcher returns when torchrun
does, and the run's status.json says how the run ended.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import WorkbenchError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


SINGLE = Ranks()


def init_from_env(device_type: str, backend: str = "auto") -> Ranks:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK, ...)."""
    try:
        ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]))
    except KeyError as exc:
        raise WorkbenchError(f"not started by torchrun ({exc.args[0]} is not set); use workbench train --devices N") from None
    if backend == "auto":
        backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        if ranks.local_rank >= torch.cuda.device_count():
            raise WorkbenchError(f"rank {ranks.rank} wants cuda:{ranks.local_rank} but this machine has "
                                 f"{torch.cuda.device_count()} GPU(s); lower --devices")
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend, timeout=timedelta(minutes=30))
    return ranks


def close_process_group(clean: bool) -> None:
    """Leave the process group. After a clean finish each rank first waits for the others: a gloo rank torn
    down while its peer still had work in flight made the peer abort at exit ("terminate called without an
    active exception", about one 2-rank CPU job in three). After an error no barrier: a peer may be gone."""
    if not dist.is_initialized():
        return
    if clean:
        dist.barrier()
    dist.destroy_process_group()


def exit_rank(code: int) -> None:
    """End a rank's process without the interpreter's teardown. The run's files are written by now; what
    is left to tear down is c10d/gloo's threads, whose C++ destructors still abort a rank now and then
    ("terminate called without an active exception", seen in about one CI run in five even after the
    closing barrier), which torchrun then reports as a failed job."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def device_for(ranks: Ranks, device_type: str) -> torch.device:
    return torch.device("cuda", ranks.local_rank) if device_type == "cuda" else torch.device("cpu")


def check_devices(devices: int, device_type: str) -> None:
    if devices < 1:
        raise WorkbenchError(f"--devices must be >= 1, got {devices}")
    if device_type == "cuda" and devices > torch.cuda.device_count():
        raise WorkbenchError(f"--devices {devices} but this machine has {torch.cuda.device_count()} GPU(s)")


def worker_command(run_root, devices: int, device_type: str, data_root: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={devices}",
           "-m", "workbench.training.worker", str(run_root), "--device-type", device_type]
    return cmd + (["--data-root", data_root] if data_root else [])


def launch(run_root, devices: int, device_type: str, data_root: str | None = None) -> int:
    """Run torchrun with `devices` workers on this run and wait for it; its exit code.

    torchrun runs in its own session, so Ctrl-C reaches only this launcher, which asks the run to stop the way
    `workbench stop` does: SIGTERM to rank 0 (its pid is in status.json), and the ranks agree to checkpoint
    and stop at the next log point; torchrun then sees its workers exit cleanly. Before rank 0 has started, or
    at a second Ctrl-C, the signal goes to torchrun itself, which terminates the workers.
    """
    from ..runs import Status, open_run

    run = open_run(run_root)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if device_type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # torchrun would pin every worker to one thread; share the cores instead.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // devices))
    env.setdefault("LOGLEVEL", "WARNING")
    proc = subprocess.Popen(worker_command(run_root, devices, device_type, data_root), env=env,
                            start_new_session=True)
    asked = []

    def stop(signum, frame):
        status = Status.read(run.status)
        rank0 = status.pid if status is not None and status.state == "running" else None
        if not asked and rank0 and rank0 not in (os.getpid(), proc.pid):
            print("\nstopping: every rank checkpoints at its next log point (Ctrl-C again to terminate now)",
                  file=sys.stderr, flush=True)
            os.kill(rank0, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        asked.append(signum)

    saved = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()  # a handled signal does not interrupt the wait (PEP 475)
    finally:
        for s, h in saved.items():
            signal.signal(s, h)
