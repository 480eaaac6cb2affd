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


@pytest.fixture(scope="session")
def kaldi_bundle() -> Path:
    """Real Kaldi binaries, OpenFst tools and steps/utils (../shared/kaldi), the oracle for Kaldi formats."""
    path = REPO.parent / "shared" / "kaldi"
    if not (path / "bin").is_dir():
        pytest.skip(f"Kaldi bundle {path} is absent (CI always has ../shared/kaldi beside the repo)")
    return path


def run_kaldi(bundle: Path, *args: str | Path, cwd: Path | None = None) -> str:
    """Run one Kaldi binary of the bundle (its libraries found on their own) and return its stdout; a failure
    fails the test with Kaldi's stderr."""
    import os
    import subprocess

    env = {**os.environ, "PATH": f"{bundle / 'bin'}:{os.environ['PATH']}", "LC_ALL": "C", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(map(str, args))} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done.stdout


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator, so every test is reproducible."""
    return np.random.default_rng(0)
