"""Speed options of the attacks (issue 7): autocast, channels-last and torch.compile change how the model
runs, never what the attack computes on x; and attacks never compute parameter gradients.

The model is the quickstart run's (digits + tiny CNN, PGD-trained at eps 0.1), on the whole digits test
split (359 images). At EPS its robust accuracy under PGD/APGD is about 50%, so agreement between two
runs is a real check, not two zeros.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from attacks import APGD, PGD, AutoAttack
from workbench import load_data, load_model
from workbench.accel import FLOAT32, Precision, compile_model
from workbench.evaluation import AttackSpec, Protocol, evaluate
from workbench.models import create_model

EPS = 0.15
BF16 = Precision(torch.bfloat16)
CHANNELS_LAST = Precision(None, channels_last=True)


@pytest.fixture(scope="module")
def setup(quickstart_run):
    """A model of its own (tests here add hooks and flip flags) and the full digits test split."""
    model = load_model(quickstart_run.best)
    x, y = load_data("digits", "test")
    return model, x, y


@pytest.fixture(scope="module")
def rgb(setup):
    """The same classifier on 3-channel images, so channels-last is a real layout change (with one channel
    NCHW and NHWC are the same memory). x_rgb = x * tint per channel, and the first convolution's weight is
    spread over the channels as w / sum(tint), so the model computes exactly what the gray one does."""
    model, x, y = setup
    tint = torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    w = state["stages.features.0.weight"]
    state["stages.features.0.weight"] = w.repeat(1, 3, 1, 1) / tint.sum()
    net = create_model("tiny", 3, 10, 8, width=16, hidden=64)
    net.load_state_dict(state)
    return net.eval(), x * tint, y


def _in_ball(x_adv, x, eps):
    assert x_adv.dtype == torch.float32 and x_adv.shape == x.shape
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float((x_adv - x).abs().max()) <= eps + 1e-6


def _record_forward(model, seen):
    """Per forward pass of the model: (any parameter requires grad, the logits' dtype, NHWC input)."""
    def hook(module, inputs, output):
        x = inputs[0]
        seen.append((any(p.requires_grad for p in model.parameters()), output.dtype,
                     x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()))
    return model.register_forward_hook(hook)


@pytest.mark.parametrize("make", [lambda m, **kw: PGD(m, eps=EPS, steps=10, **kw),
                                  lambda m, **kw: APGD(m, eps=EPS, steps=20, **kw)], ids=["pgd", "apgd"])
def test_bf16_autocast_keeps_x_float32_and_agrees_with_float32(setup, make):
    model, x, y = setup
    ref = make(model).run(x, y)
    attack = make(model, precision=BF16)
    seen: list = []
    handle = _record_forward(model, seen)
    try:
        res = attack.run(x, y)
    finally:
        handle.remove()
    assert seen and all(dtype == torch.bfloat16 for _, dtype, _ in seen)  # the forward really ran in bf16
    _in_ball(res.x_adv, x, EPS)
    assert (res.norm <= EPS + 1e-6).all()
    # Tolerance: both runs share their seed, random start and every step of float32 arithmetic on x; only
    # the logits differ, by bf16's ~0.4% relative rounding. That flips samples sitting on a decision
    # boundary and the sign of near-zero gradient coordinates, so a few trajectories part ways (observed:
    # <= 1 point here). 5 points is about twice the binomial standard error of a 359-sample accuracy near
    # 50% (2.6 points), while a broken bf16 path (e.g. underflowing, zero gradients) would leave robust
    # accuracy near clean accuracy (~95%), 45 points away.
    assert abs(res.robust_accuracy - ref.robust_accuracy) <= 0.05, (res.robust_accuracy, ref.robust_accuracy)
    assert 0.2 < ref.robust_accuracy < 0.8  # the check is not vacuous at this eps
    assert res.settings["amp"] == "bf16" and res.settings["channels_last"] is False
    assert "amp" not in ref.settings and "channels_last" not in ref.settings  # default reports unchanged


def test_channels_last_gives_the_same_robust_accuracy(rgb):
    model, x, y = rgb
    assert not x.is_contiguous(memory_format=torch.channels_last)
    ref = PGD(model, eps=EPS, steps=10).run(x, y)
    seen: list = []
    handle = _record_forward(model, seen)
    try:
        res = PGD(model, eps=EPS, steps=10, precision=CHANNELS_LAST).run(x, y)
    finally:
        handle.remove()
    assert seen and all(nhwc for _, _, nhwc in seen)  # the model saw NHWC batches
    assert res.x_adv.is_contiguous() or res.x_adv.is_contiguous(memory_format=torch.channels_last)
    _in_ball(res.x_adv, x, EPS)
    # Same values in another memory layout: only the summation order inside a convolution may change.
    assert abs(res.robust_accuracy - ref.robust_accuracy) <= 0.01
    assert 0.2 < ref.robust_accuracy < 0.8
    assert res.settings["channels_last"] is True and res.settings["amp"] == "off"


def test_compiled_model_agrees_with_eager(setup):
    model, x, y = setup
    x, y = x[:128], y[:128]
    keys = list(model.state_dict())
    model.train()  # the attack must still switch the compiled wrapper's modules to eval, then back
    try:
        compiled = compile_model(model)
        res = PGD(compiled, eps=EPS, steps=5).run(x, y)
        assert all(m.training for m in model.modules())  # every module's mode restored
        model.eval()
        ref = PGD(model, eps=EPS, steps=5).run(x, y)
    finally:
        model.eval()
    _in_ball(res.x_adv, x, EPS)
    # Same seed and arithmetic on x; the compiled kernels may only reorder float32 sums.
    assert abs(res.robust_accuracy - ref.robust_accuracy) <= 0.02
    assert list(model.state_dict()) == keys  # the original model (what gets saved) is untouched
    assert all(p.requires_grad for p in model.parameters())


def test_no_parameter_requires_grad_during_an_attack_and_flags_are_restored(setup):
    model, x, y = setup
    x, y = x[:64], y[:64]
    params = list(model.parameters())
    params[0].requires_grad_(False)  # mixed flags: exactly these must come back
    params[1].grad = torch.full_like(params[1], 0.5)
    before = [p.requires_grad for p in params]
    try:
        seen: list = []
        handle = _record_forward(model, seen)
        try:
            PGD(model, eps=EPS, steps=3).run(x, y)
            PGD(model, eps=EPS, steps=3, loss="dlr")(x, y)
            AutoAttack(model, eps=EPS, attacks=[("apgd_ce", {"steps": 3}), ("square", {"queries": 10})]).run(x, y)
        finally:
            handle.remove()
        assert seen and not any(grad for grad, _, _ in seen)
        assert [p.requires_grad for p in params] == before
        assert torch.equal(params[1].grad, torch.full_like(params[1], 0.5))
        assert all(p.grad is None for i, p in enumerate(params) if i != 1)

        # An attack that fails half-way restores the flags too.
        def boom(module, inputs, output):
            raise RuntimeError("boom")
        handle = model.register_forward_hook(boom)
        try:
            with pytest.raises(RuntimeError, match="boom"):
                PGD(model, eps=EPS, steps=3).run(x, y)
        finally:
            handle.remove()
        assert [p.requires_grad for p in params] == before
    finally:
        params[0].requires_grad_(True)
        params[1].grad = None


def test_autoattack_and_the_engine_hand_the_precision_to_every_attack(setup):
    model, x, y = setup
    x, y = x[:64], y[:64]
    aa = AutoAttack(model, eps=EPS, attacks=[("apgd_ce", {"steps": 3}), ("square", {"queries": 10})])
    aa.precision = BF16  # settable after construction: the stages follow
    seen: list = []
    handle = _record_forward(model, seen)
    try:
        res = aa.run(x, y)
    finally:
        handle.remove()
    assert all(sub.precision == BF16 for sub in aa.sub_attacks)
    assert seen and all(dtype == torch.bfloat16 for _, dtype, _ in seen)
    assert all(stage["amp"] == "bf16" for stage in res.settings["stages"])

    protocol = Protocol("p", [AttackSpec("pgd", {"steps": 3}, [0.1]), AttackSpec("fgsm", {}, [0.1])])
    report, _ = evaluate(model, x, y, [protocol], precision=Precision(torch.bfloat16, True))
    assert all(r["settings"]["amp"] == "bf16" and r["settings"]["channels_last"] for r in report["results"])
    report, _ = evaluate(model, x, y, [protocol], precision=FLOAT32)
    assert not any("amp" in r["settings"] for r in report["results"])


def test_cli_amp_option(quickstart_run, tmp_path):
    ckpt = tmp_path / "model.pt"  # a copy: its evals/ folder is this test's own
    shutil.copy(quickstart_run.best, ckpt)
    env = {**os.environ, "WORKBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    calls = {"bf16": ["attack", str(ckpt), "--pgd", "--amp", "bf16", "--eps", "0.1", "--n", "64", "--steps", "5",
                      "--json"],
             "fp8": ["attack", str(ckpt), "--pgd", "--amp", "fp8", "--eps", "0.1", "--n", "64"]}

    def call(args):
        return subprocess.run([sys.executable, "-m", "workbench", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        ok, bad = pool.map(call, calls.values())

    shown = f"\nstdout: {ok.stdout[-2000:]!r}\nstderr: {ok.stderr[-2000:]!r}"
    assert ok.returncode == 0 and "Traceback" not in ok.stderr, shown
    report = json.loads(ok.stdout)
    assert (report["amp"], report["channels_last"], report["compile"]) == ("bf16", False, False)
    row = report["results"][0]
    assert row["settings"]["amp"] == "bf16" and 0.0 <= row["robust_accuracy"] <= report["clean_accuracy"]
    saved = json.loads((tmp_path / "evals" / os.path.basename(report["saved_to"])).read_text())
    assert saved["amp"] == "bf16"

    shown = f"\nstdout: {bad.stdout[-2000:]!r}\nstderr: {bad.stderr[-2000:]!r}"
    assert bad.returncode == 2 and "Traceback" not in bad.stderr + bad.stdout, shown
    lines = bad.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--amp" in lines[0] and "fp8" in lines[0], shown
    assert not (tmp_path / "evals").exists() or len(list((tmp_path / "evals").glob("*.json"))) == 1


# -- the CPU layout of an attack call (attacks.base.prefers_nhwc) ------------------------------------------------------
def test_cpu_layout_is_a_fixed_rule_and_the_weights_come_back():
    """Square on a max-pooling MNIST-sized model runs channels-last; gradient attacks and small images do not.

    The choice depends on the model and the attack only (a timing would make the same seed give other
    last bits, so another adversarial example); the user's weights are the same tensors afterwards."""
    from attacks import Square
    from attacks.base import prefers_nhwc

    small_cnn = create_model("small_cnn", 1, 10, 28).eval()
    tiny = create_model("tiny", 1, 10, 8).eval()
    x28, x8 = torch.rand(4, 1, 28, 28), torch.rand(4, 1, 8, 8)
    assert prefers_nhwc(small_cnn, x28, grad=False) and not prefers_nhwc(small_cnn, x28, grad=True)
    assert not prefers_nhwc(tiny, x8, grad=False)  # 8x8 digits: nothing to gain
    assert not prefers_nhwc(create_model("resnet56", 3, 10, 32), torch.rand(2, 3, 32, 32), grad=False)

    seen = []
    small_cnn.stages.features[2].register_forward_pre_hook(
        lambda m, args: seen.append(m.weight.is_contiguous(memory_format=torch.channels_last)))
    before = {name: (p, p.data_ptr(), p.is_contiguous()) for name, p in small_cnn.named_parameters()}
    y = small_cnn(x28).argmax(1)
    seen.clear()
    a = Square(small_cnn, eps=0.3, queries=20).run(x28, y)
    assert seen and all(seen)  # Square saw channels-last kernels
    assert torch.equal(Square(small_cnn, eps=0.3, queries=20).run(x28, y).x_adv, a.x_adv)  # same seed, same point
    for name, p in small_cnn.named_parameters():
        assert (p, p.data_ptr(), p.is_contiguous()) == before[name]
    seen.clear()
    PGD(small_cnn, eps=0.3, steps=2).run(x28, y)
    assert seen and not any(seen)  # a gradient attack keeps NCHW
