"""The wheel holds every package: pyproject's explicit list (which `pip install .` uses, unlike the editable install
the tests run from) names each folder of asr_bn/ and cli/ that has an __init__.py."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package() -> None:
    setup = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setup["package-dir"] == {"asr_bn_cli": "cli"}
    found = set()
    for name, folder in (("asr_bn", REPO / "asr_bn"), ("asr_bn_cli", REPO / "cli")):
        found |= {".".join([name, *p.parent.relative_to(folder).parts]) for p in folder.rglob("__init__.py")}
    assert found == set(setup["packages"]), f"pyproject.toml [tool.setuptools] packages should be {sorted(found)}"
