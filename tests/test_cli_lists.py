"""The listing commands show every registered entry (in-process, through typer's test runner)."""

import json

from typer.testing import CliRunner

from defenses import DEFENSES
from workbench.cli import app
from workbench.config import list_profiles
from workbench.data import DATASETS
from workbench.models import MODELS

runner = CliRunner()


def test_models_lists_every_model_with_its_taps():
    result = runner.invoke(app, ["models"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for name in MODELS.names():
        assert name in result.output
    assert "gap, fc1, act1, fc2, act2, logits" in result.output  # cnn6's PCL taps


def test_datasets_and_profiles_are_listed():
    result = runner.invoke(app, ["datasets"], env={"COLUMNS": "300", "WORKBENCH_DATA": "/somewhere/data"})
    assert result.exit_code == 0, result.output
    for name in DATASETS.names():
        assert name in result.output
    assert "/somewhere/data" in result.output
    result = runner.invoke(app, ["profiles"], env={"COLUMNS": "300"})
    assert result.exit_code == 0
    for name in list_profiles():
        assert name in result.output


def test_defenses_lists_every_defense_with_its_defaults():
    result = runner.invoke(app, ["defenses"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for name in DEFENSES.names():
        assert name in result.output
    assert "xi=0.995" in result.output and "lam=0.05" in result.output  # PC-LC's paper values
    assert "smoothing=0.1" in result.output  # label_smoothing / ccn_ls


def test_attacks_lists_every_attack_with_its_flag_norms_and_defaults():
    from attacks import ATTACKS, all_meta

    result = runner.invoke(app, ["attacks"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    for meta in all_meta():
        assert meta.name in result.output and (meta.flag or "") in result.output
    assert "steps=40 (--steps)" in result.output  # the command line's PGD-40
    assert "version=standard" in result.output and "minimum-norm" in result.output
    listed = runner.invoke(app, ["attacks", "--json"])
    assert listed.exit_code == 0, listed.output
    data = json.loads(listed.output)
    assert [a["name"] for a in data["attacks"]] == ATTACKS.names() and "strong" in data["presets"]


# -- at 80 columns, as a user's terminal prints them (a subprocess: rich reads COLUMNS when it starts) ----

def _cli_at(width: int, *args: str, cwd=None) -> list[str]:
    import os
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": str(width), "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, "-m", "workbench", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _fake_run(runs, name: str, dataset: str, model: str, defense: str, **status) -> None:
    root = runs / name
    (root / "checkpoints").mkdir(parents=True)
    (root / "config.yaml").write_text(f"name: x\ndataset: {dataset}\nmodel: {{name: {model}}}\n"
                                      f"defense: {{name: {defense}}}\nepochs: 200\n")
    (root / "status.json").write_text(json.dumps({"state": "running", "epoch": 117, "epochs": 200,
                                                  "started": 1795409000.0, "updated": 1795409010.0,
                                                  "best_clean": 0.8512, "best_robust": 0.4733, **status}))


def test_runs_at_80_columns_keeps_every_header_word_and_run_name_whole(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "adr_lc_gb_mnist-20261123-065839", "cifar10", "madry_resnet", "adr")
    _fake_run(runs, "quickstart-20261123-065840", "digits", "tiny", "softmax", state="unreadable", best_robust=None,
              message="x" * 200)
    names = sorted(p.name for p in runs.iterdir())
    for width, setup in ((80, ["defense"]), (140, ["data/model/defense"])):
        lines = _cli_at(width, "runs", "--runs", str(runs))
        assert all(len(line) <= width for line in lines), lines
        header = lines[0].split()
        assert header == ["run", "(name-started)", "state", "epoch", "clean", "robust", *setup], lines
        table = lines[2:2 + len(names)]  # the header, its rule, one line a run; the messages follow
        assert not any("…" in line for line in table), lines
        assert sorted(line.split()[0] for line in table) == names, lines
        assert table[0].split()[2:] == ["117/200", "85.12%", "47.33%", "adr" if width == 80 else
                                        "cifar10/madry_resnet/adr"], lines
        assert any("a wider terminal, or --json" in line for line in lines) == (width == 80)
        assert lines[-1].startswith("quickstart-20261123-065840: xxx") and lines[-1].endswith("…")
    lines = _cli_at(50, "runs", "--runs", str(runs))  # too narrow for the table: a block per run
    assert [line for line in lines if line in names] == names, lines
    assert all(len(line) <= 50 for line in lines), lines
    words = " ".join(lines[1:lines.index(names[1])]).split()
    assert words == ["stopped", "·", "epoch=117/200", "·", "clean=85.12%", "·", "robust=47.33%", "·",
                     "cifar10/madry_resnet/adr"], lines


def test_runs_at_80_columns_shows_the_whole_setup_when_it_fits(tmp_path):
    runs = tmp_path / "runs"
    _fake_run(runs, "quickstart-20261123-065839", "digits", "tiny", "softmax", epoch=15, epochs=15)
    lines = _cli_at(80, "runs", "--runs", str(runs))
    assert lines[0].split() == ["run", "(name-started)", "state", "epoch", "clean", "robust", "data/model/defense"]
    assert lines[2].split()[0] == "quickstart-20261123-065839" and lines[2].split()[-1] == "digits/tiny/softmax"


def test_profiles_at_80_columns_never_cut_a_name_and_keep_one_line_per_description():
    names = list(list_profiles())
    lines = _cli_at(80, "profiles")
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    assert lines[0].split() == ["profile", "dataset", "model", "defense"]
    firsts = [line.split()[0] for line in lines[2:] if not line.startswith(" ")]
    assert firsts == names  # every name whole, in order, each on its own row
    assert len(lines) <= 2 + 2 * len(names)  # a description is one line under its row, cut with an ellipsis
    wide = _cli_at(160, "profiles")
    assert wide[0].split() == ["profile", "dataset", "model", "defense", "description"]
    assert len(wide) == 2 + len(names) and all(len(line) <= 160 for line in wide)
    assert any("digits + tiny CNN" in line for line in wide if line.startswith("quickstart "))


def test_attacks_at_80_columns_one_block_per_attack_with_its_name_whole():
    from attacks import all_meta

    lines = _cli_at(80, "attacks")
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    heads = [line.split()[0] for line in lines if line and not line.startswith(" ")]
    names = [m.name for m in all_meta()]
    assert heads[:len(names)] == names  # then the hint and the presets table
    pgd = lines.index(next(line for line in lines if line.startswith("pgd ")))
    assert "--pgd" in lines[pgd] and any("steps=40 (--steps)" in line for line in lines[pgd + 1:pgd + 5])
    assert any(line.split()[:1] == ["preset"] for line in lines)
