"""Shared fixtures: the real-data folder ../shared/data and the real Kaldi bundle ../shared/kaldi (tests needing
them skip with a reason when absent)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "tools"))  # the Kaldi oracles that scripts and tests share (tools/kaldi_align.py)


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


def kaldi_s5_scripts(s5: Path, bundle: Path) -> None:
    """Give s5 what a Kaldi egs dir has: steps/ and utils/ (links into the bundle's egs; links the bundle stores as
    one-line files naming their target, e.g. steps/score_kaldi.sh and utils/run.pl, point at that target) and a
    path.sh that puts the bundle's binaries and these utils/steps on PATH, as Kaldi's egs path.sh does."""
    for name in ("steps", "utils"):
        for src in (bundle / "egs" / name).rglob("*"):
            dst = s5 / name / src.relative_to(bundle / "egs" / name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir() and not src.is_symlink():
                dst.mkdir(exist_ok=True)
                continue
            target = src
            if src.is_file() and src.stat().st_size < 100:
                named = (src.parent / src.read_text().strip()) if "\n" not in src.read_text().strip() else None
                target = named if named is not None and named.exists() else src
            dst.symlink_to(target.resolve())
    (s5 / "path.sh").write_text(
        f"export KALDI_BUNDLE={shlex.quote(str(bundle))}\n. $KALDI_BUNDLE/path.sh\n"
        f"export PATH={shlex.quote(str(s5 / 'utils'))}:{shlex.quote(str(s5 / 'steps'))}:$PATH\n"
    )


def ctm_frames(text: str) -> list[tuple[str, int, int, str]]:
    """(utt, first frame, frames, word) per line of a Kaldi ctm, times in 10 ms frames (channel 1 checked)."""
    out = []
    for line in text.splitlines():
        utt, channel, start, duration, word, *_ = line.split()
        assert channel == "1"
        out.append((utt, round(float(start) / 0.01), round(float(duration) / 0.01), word))
    return out


def run_kaldi_bytes(bundle: Path, *args: str | Path, stdin: bytes | None = None, cwd: Path | None = None) -> bytes:
    """Run one Kaldi binary of the bundle (its libraries found on their own), `stdin` fed to it, and return its
    stdout as bytes (binary archives); a failure fails the test with Kaldi's stderr."""
    env = {**os.environ, "PATH": f"{bundle / 'bin'}:{os.environ['PATH']}", "LC_ALL": "C", "OPENBLAS_NUM_THREADS": "1"}
    done = subprocess.run([str(a) for a in args], input=stdin, cwd=cwd, env=env, capture_output=True)
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")[-2000:]
        pytest.fail(f"{' '.join(map(str, args))} failed ({done.returncode}): {stderr}")
    return done.stdout


def run_kaldi(bundle: Path, *args: str | Path, cwd: Path | None = None) -> str:
    """`run_kaldi_bytes` for text output: Kaldi's stdout as a string."""
    return run_kaldi_bytes(bundle, *args, cwd=cwd).decode()


def yesno_gmm_inputs(yesno_root: Path, num_utts: int | None = None) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """asr-bn's GMM features (23-bin fbank → DCT → per-speaker CMVN → deltas) and transcripts of yesno's first
    `num_utts` training utterances (all by default): the small real input of the GMM tests."""
    from asr_bn.data import load_audio, load_data_dir
    from asr_bn.features import FbankConfig, compute_fbank
    from asr_bn.gmm.features import gmm_features
    from asr_bn.report import Report

    data = load_data_dir(yesno_root / "data" / "train_yesno", Report("test"))
    utts = list(data.utterances)[:num_utts]
    fbank = compute_fbank([load_audio(data, u, sample_rate=8000) for u in utts],
                          FbankConfig(sample_frequency=8000, num_mel_bins=23))
    feats = gmm_features(dict(zip(utts, fbank)), {u: data.utterances[u].speaker for u in utts})
    return feats, {u: data.utterances[u].text or "" for u in utts}


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded numpy generator, so every test is reproducible."""
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def yesno_net_loglikes(yesno_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real network log-likelihoods: a tiny BN-BLSTM trained (a few seconds, CPU, seeded) on Kaldi's yesno
    alignments, forwarded on the yesno train and test sets. Returns {"train": ll.ark, "test": ll.ark} (each with
    its .scp beside it); their margins, unlike oracle 0/-20 scores, make a wrongly weighted graph decode differently."""
    from asr_bn.features import FbankConfig, FeaturePipeline
    from asr_bn.forward import ForwardConfig, forward
    from asr_bn.prep import prepare_kaldi
    from asr_bn.train import TrainConfig, train

    root = tmp_path_factory.mktemp("yesno_net")
    pipeline = FeaturePipeline(FbankConfig(sample_frequency=8000, num_mel_bins=23, dither=0.0), cmvn="utterance",
                               delta_order=0)  # fmt: skip
    prepare_kaldi(yesno_root / "data/train_yesno", root / "train", pipeline, ali_dir=yesno_root / "exp/mono")
    prepare_kaldi(yesno_root / "data/test_yesno", root / "test", pipeline)
    cfg = TrainConfig(str(root / "train"), str(root / "train"), str(root / "exp"), layers=1, units=16,
                      bn="sequence", lr=0.02, epochs=2, batch_size=4, num_workers=0, device="cpu", patience=0,
                      max_train_frames=None, cache=True, log_every=100, seed=0)  # fmt: skip
    train(cfg)
    out = {}
    for part in ("train", "test"):
        ark, scp = root / f"ll_{part}.ark", root / f"ll_{part}.scp"
        forward(root / "exp", root / part, f"ark,scp:{ark},{scp}", ForwardConfig(device="cpu"))
        out[part] = ark
    return out
