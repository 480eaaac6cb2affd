"""Shared fixtures: the real-data folder ../shared/data (tests needing it skip with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real-data folder {path} is absent (CI always has ../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def an4_root() -> Path:
    """CMU AN4 (../shared/data/an4)."""
    return _require(SHARED_DATA / "an4")


@pytest.fixture(scope="session")
def yesno_root() -> Path:
    """The small real Kaldi run (../shared/data/yesno)."""
    return _require(SHARED_DATA / "yesno")


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator, so every test is reproducible."""
    return np.random.default_rng(0)
