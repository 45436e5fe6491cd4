"""The allocator tuning: training steps stop faulting pages in once freed memory is kept (glibc on Linux)."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest

from workbench.allocator import keep_freed_memory


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and hasattr(ctypes.CDLL("libc.so.6"), "mallopt")
    except OSError:
        return False


needs_glibc = pytest.mark.skipif(not _glibc(), reason="mallopt is glibc's (Linux): elsewhere the tuning is a no-op")

STEPS = r"""
import json, resource, sys, torch
from workbench.allocator import keep_freed_memory
tuned = keep_freed_memory() if sys.argv[1] == "tuned" else False
torch.set_num_threads(1)
torch.manual_seed(0)
from workbench.models.registry import create_model
model = create_model("small_cnn", in_channels=1, num_classes=10, image_size=28)
opt = torch.optim.SGD(model.parameters(), 0.01)
x, y = torch.rand(128, 1, 28, 28), torch.randint(0, 10, (128,))
def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
for _ in range(3):
    step()
faults = []
for _ in range(9):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"tuned": tuned, "faults": sorted(faults)[len(faults) // 2]}))
"""


def _faults(variant: str, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", STEPS, variant], capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_glibc
def test_kept_memory_ends_the_page_faults_of_repeated_training_steps():
    default, tuned = _faults("default"), _faults("tuned")
    assert tuned["tuned"] and not default["tuned"]
    # Every default step hands its activation buffers back to the kernel and faults them in again. The median
    # step: a busy machine's kernel may fault a few pages of any step (seen: 4608 in 8 tuned steps under CI).
    assert default["faults"] > 1_000, default
    assert tuned["faults"] < default["faults"] / 20, (default, tuned)


@needs_glibc
def test_the_users_own_glibc_settings_are_left_alone(monkeypatch):
    import os

    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "131072"}
    assert not _faults("tuned", env)["tuned"]
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert not keep_freed_memory()
