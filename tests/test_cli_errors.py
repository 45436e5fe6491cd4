"""The console script on bad input: one `error:` line on stderr, exit status 2, no traceback.

The cases that do real work, and a few that stand for the installed command, run `python -m workbench ...` in
subprocesses, concurrently from one module fixture (each pays about 3 s for starting Python and importing
torch). The other cases call the same entry point, `workbench.cli.main`, in this process with the case's
argv, environment and folder, while those run. The tests only check the results.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from cli_here import run_here
from cores import all_cores
from workbench.checkpoint import FORMAT, VERSION
from workbench.config import load_profile

HAS_CUDA = torch.cuda.is_available()


class _SystemCall:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@dataclass
class Case:
    args: list[str]
    env: dict[str, str]
    # Text the error line must contain, so the user knows what was wrong.
    mentions: tuple[str, ...] = ()
    marker: Path | None = None  # a file that code smuggled into an input would create


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace: a trained run and the bad inputs the cases use."""
    from workbench.training import prepare_run, run_training

    root = tmp_path_factory.mktemp("cli")
    cfg, path = load_profile("quickstart", ["epochs=1", "eval.robust_every=0"])
    run = prepare_run(cfg, root / "trained", path)
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # two OpenMP threads on a small busy machine spin and crawl
    try:
        assert run_training(run.root, device="cpu") == "finished"
    finally:
        torch.set_num_threads(saved)

    # Random bytes from a fixed seed (one on which torch.load's weights-only unpickler hits an IndexError).
    (root / "random.pt").write_bytes(random.Random(2).randbytes(4096))
    torch.save({"format": FORMAT, "version": VERSION, "model": {}, "state_dict": {},
                "x": _SystemCall(root / "PWNED_zip")}, root / "evil.pt")
    (root / "evil_raw.pt").write_bytes(pickle.dumps({"x": _SystemCall(root / "PWNED_raw")}))
    (root / "bad.yaml").write_text("dataset: digits\nmodel: tiny\nepochz: 3\n")
    (root / "mnist.yaml").write_text("dataset: mnist\nmodel: small_cnn\nepochs: 1\n")
    (root / "empty_data").mkdir()
    (root / "not_a_run").mkdir()
    (root / "not_a_run" / "notes.txt").write_text("hello\n")
    return {"root": root, "run": run}


def _cases(ws) -> dict[str, Case]:
    root, run = ws["root"], ws["run"]
    # One intra-op thread each: the cases run side by side on few cores.
    env = {**os.environ, "WORKBENCH_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.setdefault("WORKBENCH_DATA", str(root / "no_data_needed"))
    ckpt = str(run.best)
    cases = {
        # The slowest call first, so it overlaps with the quick ones.
        "attack_success": Case(["attack", ckpt, "--fgsm", "--pgd", "--eps", "0.05,0.1", "--steps", "5", "--json"], env),
        "attack_preset": Case(["attack", ckpt, "--preset", "pcl", "--n", "12", "--save-examples", "2", "--json"], env),
        "attack_transfer": Case(["attack", ckpt, "--transfer-from", ckpt, "--pgd", "--steps", "5", "--eps", "0.1",
                                 "--n", "40", "--json"], env),
        "attack_missing_file": Case(["attack", "missing.pt"], env, ("missing.pt",)),
        "attack_negative_eps": Case(["attack", ckpt, "--eps", "-0.1"], env, ("--eps", "-0.1")),
        "attack_nan_eps": Case(["attack", ckpt, "--eps", "nan"], env, ("--eps", "nan")),
        "attack_text_eps": Case(["attack", ckpt, "--eps", "abc"], env, ("--eps", "abc")),
        "attack_random_bytes": Case(["attack", str(root / "random.pt")], env, ("random.pt",)),
        "attack_malicious_pickle": Case(["attack", str(root / "evil.pt")], env, ("evil.pt",), root / "PWNED_zip"),
        "attack_malicious_raw_pickle": Case(["attack", str(root / "evil_raw.pt")], env, ("evil_raw.pt",),
                                            root / "PWNED_raw"),
        "attack_steps_zero": Case(["attack", ckpt, "--steps", "0"], env, ("--steps",)),
        "attack_unknown_preset": Case(["attack", ckpt, "--preset", "madeup"], env, ("madeup", "pcl")),
        "attack_bad_norm": Case(["attack", ckpt, "--norm", "l3"], env, ("--norm", "l3")),
        "attack_linf_eps_too_big": Case(["attack", ckpt, "--eps", "8"], env, ("--eps", "8")),
        "attack_linf_only_with_l2": Case(["attack", ckpt, "--fgsm", "--norm", "l2", "--eps", "1.0"], env,
                                         ("--fgsm", "linf")),
        "attack_unknown_loss": Case(["attack", ckpt, "--loss", "hinge"], env, ("hinge",)),
        "attack_unknown_attack": Case(["attack", ckpt, "--attack", "nope:steps=1"], env, ("nope", "apgd_t", "pgd")),
        "attack_unknown_flag": Case(["attack", ckpt, "--pgdd"], env, ("--pgdd", "--pgd", "--attack NAME")),
        "attack_adaptive_softmax": Case(["attack", ckpt, "--adaptive", "--n", "10"], env, ("softmax", "--adaptive")),
        "attack_transfer_missing": Case(["attack", ckpt, "--transfer-from", "nosource.pt"], env, ("nosource.pt",)),
        "audit_two_eps": Case(["audit", ckpt, "--eps", "0.1,0.2"], env, ("--eps",)),
        "train_unknown_profile": Case(["train", "--profile", "nosuchprofile"], env, ("nosuchprofile",)),
        "train_profile_unknown_key": Case(["train", "--profile", "bad.yaml"], env, ("bad.yaml", "epochz")),
        "train_set_wrong_type": Case(["train", "--profile", "quickstart", "--set", "epochs=zero"], env,
                                     ("quickstart.yaml", "epochs", "zero")),
        "train_resume_missing": Case(["train", "--resume", "/nonexistent"], env, ("/nonexistent",)),
        "train_bad_threads_env": Case(["train", "--profile", "quickstart"], {**env, "WORKBENCH_THREADS": "lots"},
                                      ("WORKBENCH_THREADS", "lots")),
        "train_ccn_unknown_layer": Case(["train", "--profile", "ccn_mnist", "--set", "defense.layers=[conv9]"], env,
                                        ("conv9", "conv1", "fc3")),
        "train_pc_negative_xi": Case(["train", "--profile", "pc_mnist", "--set", "defense.xi=-0.5"], env,
                                     ("defense.params.xi", "-0.5")),
        "train_ccn_alpha_zero": Case(["train", "--profile", "ccn_mnist", "--set", "defense.alpha_final=0"], env,
                                     ("alpha_final",)),
        "train_l2sm_negative_alpha": Case(["train", "--profile", "l2sm_mnist", "--set", "defense.alpha=-1"], env,
                                          ("defense.params.alpha",)),
        "train_trades_with_adv_train": Case(["train", "--profile", "trades_mnist", "--set", "adv_train.attack=pgd"],
                                            env, ("trades", "adv_train")),
        "train_pc_warmup_too_long": Case(["train", "--profile", "pc_mnist", "--set", "epochs=4",
                                          "--set", "defense.warmup_epochs=4"], env, ("warmup_epochs", "4")),
        "train_brelu_without_relu": Case(["train", "--profile", "quickstart", "--set", "model=cnn6",
                                          "--set", "defense=brelu"], env, ("brelu", "ReLU")),
        "train_pcl_unknown_tap": Case(["train", "--profile", "pcl_mnist", "--set", "defense.heads=[gap, fc9]"], env,
                                      ("fc9", "gap")),
        "train_pcl_tau_zero": Case(["train", "--profile", "pcl_mnist", "--set", "defense.tau=0"], env,
                                   ("defense.params.tau",)),
        "train_pcl_bad_mode": Case(["train", "--profile", "pcl_mnist", "--set", "defense.mode=both"], env,
                                   ("defense.params.mode",)),
        "train_pcl_no_heads": Case(["train", "--profile", "pcl_mnist", "--set", "defense.heads=[]"], env,
                                   ("heads",)),
        "train_pcl_branch_width_zero": Case(["train", "--profile", "pcl_mnist", "--set",
                                             "defense.heads=[{tap: block3, fc: [0]}]"], env, ("fc",)),
        "train_pcl_warmup_too_long": Case(["train", "--profile", "pcl_mnist", "--set", "epochs=10"], env,
                                          ("warmup_epochs", "10")),
        "train_triplet_bad_mining": Case(["train", "--profile", "ds_triplet_cifar10", "--set", "defense.mining=hard"],
                                         env, ("defense.params.mining",)),
        "attack_prototype_head_softmax": Case(["attack", ckpt, "--head", "prototype", "--n", "10"], env,
                                              ("softmax", "prototype")),
        "stop_not_a_run": Case(["stop", str(root / "not_a_run")], env, (str(root / "not_a_run"),)),
        # The cases run with pipes, not a terminal.
        "tui_without_terminal": Case(["tui", "--runs", str(root)], env, ("terminal",)),
        "tui_runs_is_a_file": Case(["tui", "--runs", str(root / "random.pt")], env, ("random.pt", "not a folder")),
        "train_dataset_missing_offline": Case(
            ["train", "--profile", "mnist.yaml", "--out", str(root / "mnist_runs")],
            {**env, "WORKBENCH_DATA": str(root / "empty_data")}, ("mnist", str(root / "empty_data"))),
    }
    if not HAS_CUDA:
        cases["train_cuda_without_cuda"] = Case(["train", "--profile", "quickstart", "--device", "cuda"], env, ("cuda",))
    return cases


# Run as real processes: the cases that attack (real work, side by side) and some error cases, so the
# installed command's own start-up (argument parsing, the first imports) stays covered.
IN_A_SUBPROCESS = ("attack_success", "attack_preset", "attack_transfer", "attack_missing_file", "attack_unknown_flag",
                   "train_unknown_profile", "train_dataset_missing_offline", "tui_without_terminal")


@pytest.fixture(scope="module")
def results(ws):
    cases = _cases(ws)

    def call(case: Case) -> subprocess.CompletedProcess:
        # One thread each (the cases set OMP_NUM_THREADS=1), so every core, not this worker's share: mostly
        # torch imports, they fill whatever the other worker leaves idle.
        return subprocess.run([sys.executable, "-m", "workbench", *case.args], cwd=ws["root"], env=case.env,
                              capture_output=True, text=True, timeout=300, preexec_fn=all_cores)

    assert set(IN_A_SUBPROCESS) <= set(cases)
    outside = {name: case for name, case in cases.items() if name in IN_A_SUBPROCESS}
    with ThreadPoolExecutor(max_workers=max(2, min(6, os.cpu_count() or 2))) as pool:
        running = {name: pool.submit(call, case) for name, case in outside.items()}
        # The rest one after another here (signal handlers need the main thread) while those run.
        done = {name: run_here(case.args, case.env, ws["root"]) for name, case in cases.items() if name not in outside}
        done.update({name: future.result() for name, future in running.items()})
    return {name: (cases[name], done[name]) for name in cases}


ERROR_CASES = [
    "attack_missing_file", "attack_negative_eps", "attack_nan_eps", "attack_text_eps", "attack_random_bytes",
    "attack_malicious_pickle", "attack_malicious_raw_pickle", "attack_steps_zero", "attack_unknown_preset",
    "attack_bad_norm", "attack_linf_eps_too_big", "attack_linf_only_with_l2", "attack_unknown_loss",
    "attack_unknown_attack", "attack_unknown_flag",
    "attack_adaptive_softmax", "attack_transfer_missing", "audit_two_eps", "train_unknown_profile",
    "train_profile_unknown_key", "train_set_wrong_type", "train_resume_missing", "train_bad_threads_env",
    "stop_not_a_run",
    "train_ccn_unknown_layer", "train_pc_negative_xi", "train_ccn_alpha_zero", "train_l2sm_negative_alpha",
    "train_trades_with_adv_train", "train_brelu_without_relu", "train_pc_warmup_too_long",
    "train_dataset_missing_offline", "train_cuda_without_cuda", "train_pcl_unknown_tap", "train_pcl_tau_zero",
    "train_pcl_bad_mode", "train_pcl_no_heads", "train_pcl_branch_width_zero", "train_pcl_warmup_too_long",
    "train_triplet_bad_mining", "attack_prototype_head_softmax", "tui_without_terminal", "tui_runs_is_a_file",
]


@pytest.mark.parametrize("name", ERROR_CASES)
def test_bad_input_is_one_error_line_and_exit_2(results, name):
    if name == "train_cuda_without_cuda" and HAS_CUDA:
        pytest.skip("CUDA is available here")
    case, proc = results[name]
    shown = f"\nstdout: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-2000:]!r}"
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, shown
    assert proc.returncode == 2, shown
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, shown
    line = lines[0]
    assert line.startswith("error:") and line[len("error:"):].strip(), shown
    assert all(ch.isprintable() for ch in line), shown
    for text in case.mentions:
        assert text in line, f"{text!r} not in {line!r}"
    if case.marker is not None:
        assert not case.marker.exists(), "code from the checkpoint ran"


def test_bad_input_creates_no_run_folder(results, ws):
    # Profile, --set and device errors are caught before a run folder is made (default --out: ./runs).
    assert not (ws["root"] / "runs").exists() or not any((ws["root"] / "runs").iterdir())


def test_attack_json_success(results, ws):
    case, proc = results["attack_success"]
    shown = f"\nstdout: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-2000:]!r}"
    assert proc.returncode == 0, shown
    assert "Traceback" not in proc.stderr, shown
    out_lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    assert len(out_lines) == 1, shown
    result = json.loads(out_lines[0])
    assert isinstance(result, dict)
    assert {"checkpoint", "dataset", "n", "clean_accuracy", "results"} <= set(result)
    assert Path(result["checkpoint"]).resolve() == ws["run"].best.resolve()
    assert result["dataset"] == "digits"
    assert result["n"] == 359  # the whole digits test split
    clean = result["clean_accuracy"]
    assert 0.0 <= clean <= 1.0
    assert clean > 0.2  # a trained model, not chance

    by = {(r["attack"], r["eps"]): r for r in result["results"]}
    assert set(by) == {("fgsm", 0.05), ("fgsm", 0.1), ("pgd", 0.05), ("pgd", 0.1)}
    for r in result["results"]:
        assert {"attack", "eps", "robust_accuracy", "seconds"} <= set(r)
        assert 0.0 <= r["robust_accuracy"] <= 1.0
        assert r["seconds"] >= 0
        # Robust accuracy counts samples that are correct clean *and* under attack.
        assert r["robust_accuracy"] <= clean + 1e-9, r
    assert by[("pgd", 0.1)]["robust_accuracy"] <= by[("pgd", 0.05)]["robust_accuracy"] + 0.02
    assert by[("fgsm", 0.1)]["robust_accuracy"] <= by[("fgsm", 0.05)]["robust_accuracy"] + 0.02
    # PGD (5 steps from a random start) is at least about as strong as FGSM at the same eps.
    for e in (0.05, 0.1):
        assert by[("pgd", e)]["robust_accuracy"] <= by[("fgsm", e)]["robust_accuracy"] + 0.03

    # The evaluation was saved into the run's evals/ folder.
    evals = ws["run"].evals
    saved = [p for p in evals.glob("*.json") if p.name == Path(result["saved_to"]).name]
    assert len(saved) == 1, saved
    on_disk = json.loads(saved[0].read_text())
    assert on_disk["clean_accuracy"] == clean
    assert [(r["attack"], r["eps"], r["robust_accuracy"]) for r in on_disk["results"]] == \
           [(r["attack"], r["eps"], r["robust_accuracy"]) for r in result["results"]]
    assert not [p for p in evals.iterdir() if p.name.endswith(".tmp")]


def _json_out(results, name):
    case, proc = results[name]
    shown = f"\nstdout: {proc.stdout[-2000:]!r}\nstderr: {proc.stderr[-2000:]!r}"
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, shown
    return json.loads(proc.stdout)


def test_attack_preset_runs_paper_and_strong_side_by_side(results):
    report = _json_out(results, "attack_preset")
    names = [p["name"] for p in report["protocols"]]
    assert names == ["paper:pcl", "strong"]
    labels = {r["label"] for r in report["results"]}
    assert {"FGSM", "BIM-10", "MIM-10", "PGD-10", "AutoAttack"} <= labels
    pgd = next(r for r in report["results"] if r["label"] == "PGD-10")
    assert pgd["settings"]["step_size"] == "eps/4" and pgd["settings"]["random_start"] is False
    aa = next(r for r in report["results"] if r["label"] == "AutoAttack")
    assert [s["name"] for s in aa["settings"]["stages"]] == ["apgd_ce", "apgd_t", "fab_t", "square"]
    worst = {(w["protocol"], w["eps"]): w["robust_accuracy"] for w in report["worst_case"]}
    for eps in (0.1, 0.15, 0.2, 0.3):  # the strong protocol runs at the paper's eps values
        assert worst[("all", eps)] <= min(worst[("paper:pcl", eps)], worst[("strong", eps)]) + 1e-9
    assert Path(report["csv"]).is_file()
    examples = torch.load(report["examples"], weights_only=True)["examples"]
    assert examples and {"clean", "adversarial", "clean_pred", "adv_pred", "true"} <= set(examples[0])


def test_attack_transfer_from_a_source(results):
    report = _json_out(results, "attack_transfer")
    assert report["transfer_from"] and report["transfer"] is True
    row = report["results"][0]
    assert row["settings"]["early_stop"] is False
    assert 0.0 <= row["robust_accuracy"] <= report["clean_accuracy"]
