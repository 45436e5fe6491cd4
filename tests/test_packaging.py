"""The installed (non-editable) package must hold every Python package of the source tree.

pyproject.toml lists its packages by hand; an editable install finds a package missing from that list, a
`pip install .` does not, so the README's first command would fail with ModuleNotFoundError."""

from __future__ import annotations

from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]


def test_every_source_package_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {".".join(init.parent.relative_to(ROOT).parts)
               for top in ("workbench", "attacks", "defenses") for init in (ROOT / top).rglob("__init__.py")}
    assert on_disk - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    for name, folder in config.get("package-dir", {}).items():
        assert name in listed and (ROOT / folder).is_dir()
