"""The training step never waits for the device: no value is read back to the host between log points.

On a GPU every `.item()`, `float(t)`, `bool(t)`, boolean-mask index or `nonzero` blocks the CPU until the
GPU catches up, so the launch queue drains once per step. This machine has no GPU, so the test records those
calls themselves (a TorchFunctionMode sees every tensor operation) during each step of a real run.
"""

from __future__ import annotations

import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

from workbench.config import load_profile
from workbench.training import prepare_run
from workbench.training.session import load_run_config
from workbench.training.trainer import Trainer

READS = {"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy", "nonzero", "masked_select",
         "argwhere", "unique", "cpu"}


def _bool_index(args) -> bool:
    idx = args[1] if len(args) > 1 else None
    parts = idx if isinstance(idx, tuple) else (idx,)
    return any(isinstance(p, torch.Tensor) and p.dtype == torch.bool for p in parts)


# Reads of tensors that live on the host by design, wherever the model runs: the optimizers' step counters
# (torch keeps them on the CPU unless `capturable`) and eps draws from the run's CPU generator.
HOST_SIDE = {("torch/optim/", None), ("workbench/training/adversarial.py", "_eps")}


def _origin() -> tuple[str, str]:
    """(file, function) of the first caller frame outside this module and torch's dispatch."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename.replace("\\", "/")
        if "torch/overrides" not in path and "torch/_tensor" not in path and not path.endswith("test_hot_loop.py"):
            return path, frame.f_code.co_name
        frame = frame.f_back
    return "?", "?"


class HostReads(TorchFunctionMode):
    """Records tensor operations that copy a value back to the host (a sync on a GPU)."""

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name in READS or (name in ("__getitem__", "__setitem__") and _bool_index(args)):
            path, function = _origin()
            if not any(part in path and fn in (None, function) for part, fn in HOST_SIDE):
                self.reads.append(f"{name} in {path.rsplit('/', 2)[-2:]}:{function}")
        return func(*args, **(kwargs or {}))


PROFILES = {
    "softmax PGD-AT": [],
    "pcl": ["defense=pcl", "defense.heads=[fc1]", "defense.warmup_epochs=0"],
    "ds_center": ["defense=ds_center", "defense.heads=[fc1]", "defense.warmup_epochs=0"],
    "ds_contrastive": ["defense=ds_contrastive", "defense.heads=[fc1]", "defense.warmup_epochs=0"],
    "ds_triplet": ["defense=ds_triplet", "defense.heads=[fc1]", "defense.warmup_epochs=0"],
    "adr": ["adv_train.attack=none", "defense=adr", "defense.steps=2", "defense.eps=0.1", "defense.step_size=0.05"],
    "trades": ["adv_train.attack=none", "defense=trades", "defense.steps=2", "defense.eps=0.1",
               "defense.step_size=0.05"],
    "pc_loss": ["defense=pc_loss"],
    "ccn": ["defense=ccn"],
    "eps range per batch": ["adv_train.eps=[0.05, 0.15]"],
    "eps range per sample": ["adv_train.eps=[0.05, 0.15]", "adv_train.eps_sampling=sample"],
}


@pytest.mark.parametrize("name", PROFILES)
def test_no_host_reads_in_a_training_step(name, tmp_path):
    cfg, path = load_profile("quickstart", ["epochs=2", "eval.robust_every=0", "data.train_subset=320",
                                            "log_every=1000", *PROFILES[name]])
    run = prepare_run(cfg, tmp_path / "run", path)
    trainer = Trainer(load_run_config(run), run, torch.device("cpu"))
    reads: list[list[str]] = []
    step = trainer._step

    def recorded(*args, **kwargs):
        with HostReads() as mode:
            step(*args, **kwargs)
        reads.append(mode.reads)

    trainer._step = recorded
    assert trainer.train() == "finished"
    # The first epoch may read while state initialises (a prototype set checks once that every class was seen).
    later = reads[len(reads) // 2:]
    assert later and all(r == [] for r in later), f"host reads per step: {later[:3]}"
