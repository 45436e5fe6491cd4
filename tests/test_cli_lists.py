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
