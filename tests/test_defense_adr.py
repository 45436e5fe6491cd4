"""ADR (Adversary Divergence Reduction) as a user relies on it: the compactness terms compute what the paper
and the authors' code define, the adversaries stay in their ball, gradients reach the generator, a tiny
model trains, the profiles load, and bad settings are one-line CLI errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from defenses import DEFENSES, BatchContext, create_defense
from defenses.adr import (
    ADRParams,
    entropy,
    global_compactness,
    global_weights,
    local_compactness,
)
from workbench import load_data
from workbench.checkpoint import read_checkpoint
from workbench.config import load_profile
from workbench.errors import WorkbenchError
from workbench.models import create_model
from workbench.runs import read_metrics
from workbench.training import prepare_run, run_training

CTX = BatchContext(epoch=0, epochs=1, step=0)
QUICK = {"steps": 3, "step_size": 0.05, "eps": 0.1}  # a short inner attack for the tests


def digits_batch(n=32, seed=0):
    x, y = load_data("digits", "train")
    idx = torch.randint(0, len(y), (n,), generator=torch.Generator().manual_seed(seed))
    return x[idx], y[idx]


# -- the terms against hand computation -------------------------------------------------------------------------------
def test_global_weights_are_one_and_minus_0_0101():
    y = torch.tensor([0, 0, 1])
    w = global_weights(y, y, 0.99)
    off = (0.99 - 1) / 0.99
    assert off == pytest.approx(-0.010101, abs=1e-6)
    want = torch.tensor([[1, 1, off], [1, 1, off], [off, off, 1]])
    assert torch.allclose(w, want)
    assert torch.equal(global_weights(y, y, 1.0), (y[:, None] == y[None, :]).float())  # alpha 1: pull only


def test_local_and_global_compactness_by_hand():
    z = torch.tensor([[0.0, 1.0], [2.0, 0.0], [1.0, 1.0]])  # clean, labels 0, 0, 1
    za = torch.tensor([[0.5, 1.0], [2.0, 2.0], [0.0, 0.0]])  # adversarial
    y = torch.tensor([0, 0, 1])
    off = (0.99 - 1) / 0.99

    # Local, code distance: mean over dims of |z - z_a|, mean over the batch.
    per = [(0.5 + 0.0) / 2, (0.0 + 2.0) / 2, (1.0 + 1.0) / 2]
    assert local_compactness(z, za).item() == pytest.approx(sum(per) / 3)
    # The paper's p-norms on the same pairs.
    assert local_compactness(z, za, "l1").item() == pytest.approx((0.5 + 2.0 + 2.0) / 3)
    assert local_compactness(z, za, "l2").item() == pytest.approx((0.5 + 2.0 + math.sqrt(2)) / 3)
    assert local_compactness(z, za, "linf").item() == pytest.approx((0.5 + 2.0 + 1.0) / 3)

    # Global, code pairs: all 9 (adversarial i, clean j) pairs, i = j included.
    def d(a, b):
        return sum(abs(p - q) for p, q in zip(a, b)) / len(a)

    w = [[1, 1, off], [1, 1, off], [off, off, 1]]
    want = sum(w[i][j] * d(za[i].tolist(), z[j].tolist()) for i in range(3) for j in range(3)) / 9
    assert global_compactness(za, y, z, y).item() == pytest.approx(want, rel=1e-6)
    # The paper's clean-clean pairs with the L2 norm.
    want_cc = sum(w[i][j] * math.dist(z[i].tolist(), z[j].tolist()) for i in range(3) for j in range(3)) / 9
    assert global_compactness(z, y, z, y, 0.99, "l2").item() == pytest.approx(want_cc, rel=1e-6)

    # Entropy of a prediction.
    logits = torch.tensor([[0.0, math.log(3.0)]])  # p = (1/4, 3/4)
    assert entropy(logits).item() == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)), rel=1e-6)


def test_total_loss_is_the_weighted_sum_of_the_logged_terms():
    torch.manual_seed(0)
    logits, logits_a = torch.randn(6, 4), torch.randn(6, 4)
    z, za = torch.rand(6, 5), torch.rand(6, 5)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    params = {"lam_lc": 0.5, "lam_gb": 2.0, "lam_conf": 0.3, "lam_smt": 0.7, "ce_clean": 0.5, "ce_adv": 0.25}
    defense = create_defense("adr", params, 4)
    t = defense.terms(logits, z, logits_a, za, y)
    assert set(t) == {"ce_clean", "ce_adv", "lc", "gb", "conf", "smt"}
    assert t["ce_clean"].item() == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-6)
    assert t["ce_adv"].item() == pytest.approx(F.cross_entropy(logits_a, y).item(), rel=1e-6)
    p, pa = F.softmax(logits, 1), F.softmax(logits_a, 1)
    kl = (p * (p.log() - pa.log())).sum(1).mean()
    assert t["smt"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert t["conf"].item() == pytest.approx(-(pa * pa.log()).sum(1).mean().item(), rel=1e-6)  # x_a only (code)
    want = (0.5 * t["ce_clean"] + 0.25 * t["ce_adv"] + 0.5 * t["lc"] + 2.0 * t["gb"] + 0.3 * t["conf"]
            + 0.7 * t["smt"])
    assert defense.combine(t).item() == pytest.approx(want.item(), rel=1e-6)

    both = create_defense("adr", {"confidence": "both"}, 4).terms(logits, z, logits_a, za, y)
    assert both["conf"].item() == pytest.approx((-(pa * pa.log()).sum(1) - (p * p.log()).sum(1)).mean().item(),
                                                rel=1e-6)
    # ce_adv null: 1 with PGD (ADR PT code), 0 with TRADES (its KL term replaces it); TRADES adds its own KL.
    assert ADRParams().ce_adv_weight == 1.0 and ADRParams(adversary="trades").ce_adv_weight == 0.0
    trades = create_defense("adr", {"adversary": "trades", "beta": 3.0, "lam_lc": 0.0, "lam_gb": 0.0,
                                    "lam_smt": 0.0}, 4)
    t = trades.terms(logits, z, logits_a, za, y)
    assert t["kl"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert trades.combine(t).item() == pytest.approx((t["ce_clean"] + 3.0 * t["kl"]).item(), rel=1e-6)


@pytest.mark.parametrize("options", [{}, {"distance": "l2", "global_pairs": "clean_clean", "detach_clean": False},
                                     {"distance": "linf", "confidence": "both", "lam_conf": 1.0},
                                     {"adversary": "trades"}])
def test_single_class_batch_is_finite(options):
    # SPEC 3.6: the authors' label weight divides by the batch's largest label distance, 0 for one class.
    torch.manual_seed(0)
    defense = create_defense("adr", {**QUICK, **options}, 10)
    model = defense.transform_model(create_model("tiny", 1, 10, 8)).train()
    x, _ = digits_batch(16)
    y = torch.full((16,), 3)
    out = defense.training_loss(model, x, y, CTX)
    assert torch.isfinite(out.loss) and all(torch.isfinite(v) for v in out.parts.values())
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # Every pair has weight 1 here, so the global term is an ordinary (non-negative) mean distance.
    assert out.parts["gb"] >= 0


# -- the adversaries --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("adversary", ["pgd", "trades"])
def test_crafted_examples_stay_in_the_ball_and_leave_the_model_alone(adversary):
    torch.manual_seed(0)
    defense = create_defense("adr", {"adversary": adversary, "eps": 0.1, "steps": 5, "step_size": 0.05}, 10)
    model = create_model("small_cnn", 1, 10, 16).train()  # has dropout
    torch.nn.init.normal_(model.stages["logits"].weight, std=0.1)  # zero-initialized: give it a gradient
    x = F.interpolate(digits_batch(16)[0], size=16)
    y = digits_batch(16)[1]
    x_adv = defense.craft(model, x, y)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # input gradients only
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() > 0.09  # it moved to the edge of the ball
    with torch.no_grad():
        model.eval()
        if adversary == "pgd":
            worse = F.cross_entropy(model(x_adv), y) > F.cross_entropy(model(x), y)
        else:
            worse = F.kl_div(F.log_softmax(model(x_adv), 1), F.softmax(model(x), 1), reduction="sum") > 0
        model.train()
    assert worse


def test_pgd_adversary_runs_in_eval_mode():
    # Without a random start the PGD iterates are deterministic only if dropout is off while crafting.
    defense = create_defense("adr", {"eps": 0.2, "steps": 4, "step_size": 0.05, "random_start": False}, 10)
    torch.manual_seed(0)
    model = create_model("small_cnn", 1, 10, 16).train()
    torch.nn.init.normal_(model.stages["logits"].weight, std=0.1)  # zero-initialized: give it a gradient
    x = F.interpolate(digits_batch(8)[0], size=16)
    y = digits_batch(8)[1]
    assert torch.equal(defense.craft(model, x, y), defense.craft(model, x, y))


# -- gradients --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("term", ["lam_lc", "lam_gb"])
def test_compactness_terms_alone_train_the_generator_only(term):
    torch.manual_seed(0)
    params = {**QUICK, "ce_clean": 0.0, "ce_adv": 0.0, "lam_lc": 0.0, "lam_gb": 0.0, "lam_smt": 0.0, term: 1.0}
    defense = create_defense("adr", params, 10)
    model = create_model("tiny", 1, 10, 8).train()
    x, y = digits_batch(16)
    defense.training_loss(model, x, y, CTX).loss.backward()
    generator = [p.grad for p in model.stages["features"].parameters()]
    classifier = [p.grad for name in ("fc1", "logits") for p in model.stages[name].parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in generator)
    assert all(g is None or g.abs().sum() == 0 for g in classifier)


def test_clean_side_is_detached_unless_asked():
    logits, logits_a = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    z, za = torch.rand(4, 6, requires_grad=True), torch.rand(4, 6, requires_grad=True)
    y = torch.tensor([0, 1, 1, 2])
    for detach in (True, False):
        for t in (logits, logits_a, z, za):
            t.grad = None
        defense = create_defense("adr", {"detach_clean": detach, "ce_clean": 0.0, "ce_adv": 0.0}, 3)
        defense.combine(defense.terms(logits, z, logits_a, za, y)).backward()
        assert za.grad.abs().sum() > 0 and logits_a.grad.abs().sum() > 0
        for clean in (z, logits):  # (CE(x) at weight 0 still leaves a zero gradient on the clean logits)
            reached = clean.grad is not None and clean.grad.abs().sum() > 0
            assert reached != detach


# -- training ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("adversary", ["pgd", "trades"])
def test_tiny_model_reduces_the_adr_loss(adversary):
    torch.manual_seed(0)
    defense = create_defense("adr", {**QUICK, "adversary": adversary}, 10)
    model = defense.transform_model(create_model("tiny", 1, 10, 8))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses, parts = [], []
    model.train()
    for step in range(60):  # TRADES' KL term grows as the model learns: 40 steps sat at the threshold
        x, y = digits_batch(32, seed=step)
        out = defense.training_loss(model, x, y, BatchContext(epoch=0, epochs=1, step=step))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
        parts.append(out.parts)
    want = {"ce_clean", "ce_adv", "lc", "gb", "conf", "smt", "adv_acc", "z_mean_abs", "z_dead_frac"} | (
        {"kl"} if adversary == "trades" else set())
    assert set(parts[0]) == want
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.7 * first, (first, last)
    assert sum(p["adv_acc"] for p in parts[-5:]) / 5 > 0.4  # it learns the adversarial examples too


def test_trainer_logs_every_term(tmp_path):
    cfg, path = load_profile("quickstart", ["epochs=1", "eval.robust_every=0", "adv_train.attack=none",
                                            "defense=adr", "defense.steps=2", "defense.eps=0.1",
                                            "defense.step_size=0.05"])
    run = prepare_run(cfg, tmp_path / "adr", path)
    assert run_training(run.root, device="cpu") == "finished"
    records = list(read_metrics(run.metrics))
    (record,) = [r for r in records if r["kind"] == "epoch"]
    for k in ("ce_clean", "ce_adv", "lc", "gb", "conf", "smt", "adv_acc"):
        assert math.isfinite(record[f"loss_{k}"]), k
    assert record["test_clean_acc"] > 0.3
    # Step records carry the terms too (the feature-health step check reads them), and the checkpoint the
    # first epoch's base: mean |z| at initialisation.
    steps = [r for r in records if r["kind"] == "step"]
    assert steps and all(math.isfinite(r["loss_z_mean_abs"]) and r["phase"] == "adr" for r in steps)
    base = read_checkpoint(run.last)["defense_state"]["z_initial"]
    assert base["step"] == 0 and base["loss_z_mean_abs"] > 0


# -- the ADV warm-up (issue 19) ---------------------------------------------------------------------------------------
def grads_of(defense, model, x, y, ctx):
    torch.manual_seed(1)  # the same random start for both defenses
    model.zero_grad()
    out = defense.training_loss(model, x, y, ctx)
    out.loss.backward()
    return out, [p.grad.clone() for p in model.parameters()]


def test_warmup_trains_plain_adv_then_the_adr_terms():
    """During the warm-up the ADR terms are logged but weigh 0: the loss and every gradient are ADV's."""
    torch.manual_seed(0)
    model = create_model("tiny", 1, 10, 8).train()
    x, y = digits_batch(32)
    adr = create_defense("adr", {**QUICK, "warmup_epochs": 2}, 10)
    adv = create_defense("adr", {**QUICK, "lam_lc": 0.0, "lam_gb": 0.0, "lam_smt": 0.0}, 10)
    assert [adr.phase(e, 4) for e in range(4)] == ["adv", "adv", "adr", "adr"]
    assert adv.phase(0, 4) == "adr" and create_defense("adr", {}, 10).phase(0, 1) == "adr"

    ctx = BatchContext(epoch=1, epochs=4, step=0)
    warm, warm_grads = grads_of(adr, model, x, y, ctx)
    plain, plain_grads = grads_of(adv, model, x, y, ctx)
    assert all(warm.parts[k] > 0 for k in ("lc", "smt"))  # still logged
    assert warm.loss.item() == pytest.approx((warm.parts["ce_clean"] + warm.parts["ce_adv"]).item(), rel=1e-6)
    assert all(torch.allclose(a, b) for a, b in zip(warm_grads, plain_grads))

    on, on_grads = grads_of(adr, model, x, y, BatchContext(epoch=2, epochs=4, step=0))
    t = on.parts
    want = t["ce_clean"] + t["ce_adv"] + t["lc"] + t["gb"] + t["smt"]
    assert on.loss.item() == pytest.approx(want.item(), rel=1e-5)
    assert any(not torch.allclose(a, b) for a, b in zip(on_grads, plain_grads))
    # The trainer's phase (decided with the run's records) wins over the epoch's.
    forced, _ = grads_of(adr, model, x, y, BatchContext(epoch=2, epochs=4, step=0, phase="adv"))
    assert forced.loss.item() == pytest.approx((forced.parts["ce_clean"] + forced.parts["ce_adv"]).item(), rel=1e-6)


def test_warmup_run_logs_its_phases_and_the_feature_health(tmp_path):
    cfg, path = load_profile("quickstart", ["epochs=3", "eval.robust_every=0", "adv_train.attack=none",
                                            "defense=adr", "defense.steps=2", "defense.eps=0.1",
                                            "defense.step_size=0.05", "defense.warmup_epochs=1"])
    run = prepare_run(cfg, tmp_path / "adr", path)
    assert run_training(run.root, device="cpu") == "finished"  # the health defaults leave a healthy run alone
    records = [r for r in read_metrics(run.metrics) if r["kind"] == "epoch"]
    assert [r["phase"] for r in records] == ["adv", "adr", "adr"]
    for r in records:
        assert r["loss_z_mean_abs"] > 0 and 0 < r["loss_z_dead_frac"] < 1  # tiny's z is post-ReLU
    assert records[-1]["test_clean_acc"] > 0.5


def test_warmup_must_leave_an_adr_epoch():
    with pytest.raises(WorkbenchError, match="warmup_epochs 3 leaves no ADR epoch"):
        load_profile("adr_adv_mnist", ["epochs=3", "defense.warmup_epochs=3"])


# -- config -----------------------------------------------------------------------------------------------------------
PROFILES = {  # profile: (adversary, lam_lc, lam_gb, lam_smt, lam_conf)
    "adv_mnist": ("pgd", 0, 0, 0, 0), "adr_lc_mnist": ("pgd", 1, 0, 0, 0), "adr_lc_gb_mnist": ("pgd", 1, 1, 0, 0),
    "adr_adv_mnist": ("pgd", 1, 1, 1, 0), "adr_trades_mnist": ("trades", 1, 1, 1, 0),
    "adr_cifar10": ("pgd", 1, 1, 1, 0),
}


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_load_with_the_papers_settings(name):
    cfg, _ = load_profile(name)
    assert cfg.defense.name == "adr" and not cfg.adv_train.enabled and cfg.batch_size == 128
    p = ADRParams.model_validate(cfg.defense.params)
    assert (p.adversary, p.lam_lc, p.lam_gb, p.lam_smt, p.lam_conf) == PROFILES[name]
    if name == "adr_cifar10":
        assert (cfg.model.name, p.tap, p.eps, p.steps, p.step_size) == ("madry_resnet", "pool", 0.031, 10, 0.007)
        assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.schedule.milestones, cfg.epochs) == \
               (0.1, 2e-4, [100, 150], 200)
    else:
        assert (cfg.model.name, p.tap, p.eps, p.steps, p.step_size) == ("small_cnn", "features", 0.3, 20, 0.01)
        assert (cfg.optimizer.lr, cfg.schedule.milestones, cfg.epochs) == (0.01, [55, 75, 90], 100)


# Issue 19's variants of ADR-ADV: each differs from adr_adv_mnist in the named keys only.
VARIANTS = {
    "adr_adv_warmup_mnist": {"defense.params.warmup_epochs": 10},
    "adr_adv_lam01_mnist": {"defense.params.lam_lc": 0.1, "defense.params.lam_gb": 0.1,
                            "defense.params.lam_smt": 0.1},
    "adr_adv_bn_mnist": {"model.options.feature_norm": "batch"},
    "adr_adv_ln_mnist": {"model.options.feature_norm": "layer"},
    "adr_adv_clip_mnist": {"grad_clip": 5.0},
}


def flat(data, prefix=""):
    out = {}
    for k, v in data.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_profiles_differ_from_the_papers_setting_in_their_keys_only(name):
    paper = flat(load_profile("adr_adv_mnist")[0].model_dump(mode="json"))
    variant = flat(load_profile(name)[0].model_dump(mode="json"))
    changed = {k: variant.get(k) for k in paper.keys() | variant.keys()
               if paper.get(k) != variant.get(k) and k not in ("name", "description")}
    assert changed == VARIANTS[name]


def test_unknown_tap_is_a_one_line_error_naming_the_taps():
    defense = create_defense("adr", {"tap": "conv9"}, 10)
    with pytest.raises(WorkbenchError) as exc:
        defense.transform_model(create_model("small_cnn", 1, 10, 28))
    assert "conv9" in str(exc.value) and "features, fc1, fc2, logits" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_params_are_documented_and_strict():
    assert DEFENSES.get("adr").crafts_adversarial
    assert all(f.description for f in ADRParams.model_fields.values())
    for bad in ({"lam_lc": -1.0}, {"alpha": 0.0}, {"eps": float("nan")}, {"distance": "l3"}, {"steps": 0},
                {"adversary": "fgsm"}, {"lambda_lc": 1.0}, {"steps": 2.5}):
        with pytest.raises(ValidationError):
            ADRParams.model_validate(bad)


# The real console script (a subprocess each: torch imports dominate, so few cases, two at a time); the other
# bad values are checked in-process above.
CLI_CASES = {  # --set overrides on adr_adv_mnist: text the error line must contain
    "tap": (["defense.tap=conv9"], ("conv9", "features, fc1, fc2, logits")),
    "negative_lambda": (["defense.lam_gb=-1"], ("defense.params.lam_gb", "-1")),
    "unknown_key": (["defense.lambda_lc=1"], ("lambda_lc", "unknown key")),
    "with_adv_train": (["adv_train.attack=pgd"], ("adr", "adv_train")),
}


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("adr_cli")
    env = {**os.environ, "WORKBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1", "WORKBENCH_DATA": str(root / "no_data")}

    def call(sets):
        args = ["train", "--profile", "adr_adv_mnist", "--out", str(root / "runs")]
        for s in sets:
            args += ["--set", s]
        return subprocess.run([sys.executable, "-m", "workbench", *args], cwd=root, env=env, capture_output=True,
                              text=True, timeout=300, check=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(CLI_CASES, pool.map(call, [sets for sets, _ in CLI_CASES.values()])))
    return root, done


@pytest.mark.parametrize("name", CLI_CASES)
def test_bad_adr_settings_are_one_cli_error_line(cli_results, name):
    root, done = cli_results
    proc = done[name]
    shown = f"\nstdout: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-2000:]!r}"
    assert "Traceback" not in proc.stderr + proc.stdout, shown
    assert proc.returncode == 2, shown
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), shown
    for text in CLI_CASES[name][1]:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    assert not (root / "runs").exists() or not any((root / "runs").iterdir())
