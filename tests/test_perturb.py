"""`asr-bn data perturb-speed` against Kaldi's own utils/data/perturb_data_dir_speed_3way.sh on the same AN4 data
dirs (same ids, speakers, texts, segments, utt2uniq and durations; Kaldi's utils/validate_data_dir.sh accepts the
output), and the audio checked by what speed perturbation must do to it: a tone comes out at factor × its frequency,
and the copy lasts 1/factor as long."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from asr_bn.data import AudioError, load_audio, load_data_dir
from asr_bn.errors import UsageError
from asr_bn.perturb import change_speed, perturb_speed, speed_factors
from asr_bn.report import Report
from asr_bn_cli.main import build_app
from conftest import kaldi_s5_scripts
from test_data import an4_wavs, kaldi_files, write_dir


def _table(path: Path) -> dict[str, str]:
    return {k: v for k, _, v in (line.partition(" ") for line in path.read_text().splitlines())}


def _kaldi_3way(kaldi_bundle: Path, src: Path, work: Path) -> Path:
    """Kaldi's perturb_data_dir_speed_3way.sh on a copy of `src` (it writes utt2dur into its source). Kaldi's script
    only checks that sox exists (it writes sox pipes into wav.scp): a sox that fails when run stands on PATH."""
    work.mkdir()
    shutil.copytree(src, work / "src")
    kaldi_s5_scripts(work, kaldi_bundle)
    fake = work / "fakebin"
    fake.mkdir()
    (fake / "sox").write_text("#!/bin/sh\necho 'sox must not run in this test' >&2\nexit 1\n")
    (fake / "sox").chmod(0o755)
    env = {**os.environ, "LC_ALL": "C", "PATH": f"{fake}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", ". ./path.sh && utils/data/perturb_data_dir_speed_3way.sh src out"],
                          cwd=work, env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return work / "out"


def _compare_with_kaldi(ours: Path, kaldi: Path) -> None:
    for name in ("utt2spk", "spk2utt", "text", "utt2uniq"):
        assert (ours / name).read_text() == (kaldi / name).read_text(), name
    assert _table(ours / "wav.scp").keys() == _table(kaldi / "wav.scp").keys()
    ours_dur, kaldi_dur = _table(ours / "utt2dur"), _table(kaldi / "utt2dur")
    assert ours_dur.keys() == kaldi_dur.keys()
    # Kaldi divides the original's duration by the factor; asr-bn measures its copy (one sample of rounding)
    assert all(abs(float(ours_dur[u]) - float(kaldi_dur[u])) < 2e-4 for u in ours_dur)


def test_perturb_speed_is_kaldis_3way(kaldi_bundle: Path, an4_root: Path, tmp_path: Path) -> None:
    """Whole recordings: the same data dir as Kaldi's script (ids sp0.9-/sp1.1- on utterances, speakers and
    recordings, originals unchanged), and Kaldi's validate_data_dir.sh accepts asr-bn's."""
    wavs = an4_wavs(an4_root, 4)
    src = write_dir(tmp_path / "src", kaldi_files(wavs))
    report = perturb_speed(src, tmp_path / "ours", (0.9, 1.0, 1.1), 16000)
    assert report.counts["utterances out"] == 12 and report.counts["recordings written"] == 8
    _compare_with_kaldi(tmp_path / "ours", _kaldi_3way(kaldi_bundle, src, tmp_path / "kaldi"))
    done = subprocess.run(["bash", "-c", f". ./path.sh && utils/validate_data_dir.sh --no-feats {tmp_path / 'ours'}"],
                          cwd=tmp_path / "kaldi", env={**os.environ, "LC_ALL": "C"}, capture_output=True)
    assert done.returncode == 0, done.stdout.decode()[-2000:] + done.stderr.decode()[-2000:]
    data = load_data_dir(tmp_path / "ours", Report("t"))
    utt, spk, _ = wavs[0]
    original = load_audio(data, utt, sample_rate=16000)
    slow = load_audio(data, f"sp0.9-{utt}", sample_rate=16000)
    fast = load_audio(data, f"sp1.1-{utt}", sample_rate=16000)
    assert len(slow) == -(-len(original) * 10 // 9) and len(fast) == -(-len(original) * 10 // 11)
    assert data.utterances[f"sp0.9-{utt}"].speaker == f"sp0.9-{spk}"


def test_segments_are_scaled_as_kaldis(kaldi_bundle: Path, an4_root: Path, tmp_path: Path) -> None:
    """With segments, each recording is perturbed once and its segments' times divided by the factor (Kaldi prints
    them with two decimals, asr-bn exactly): the same segments, and the audio of a perturbed segment is the
    perturbed recording's."""
    wavs = an4_wavs(an4_root, 2)
    files = kaldi_files(wavs)
    files["wav.scp"] = "".join(f"rec{i} {p}\n" for i, (_, _, p) in enumerate(wavs))
    files["segments"] = "".join(f"{u}-{k} rec{i} {0.5 * k:.2f} {0.5 * k + 0.4:.2f}\n"
                                for i, (u, _, _) in enumerate(wavs) for k in (1, 2))
    files["utt2spk"] = "".join(f"{u}-{k} {s}\n" for u, s, _ in wavs for k in (1, 2))
    files["text"] = "".join(f"{u}-{k} WORD{k}\n" for u, _, _ in wavs for k in (1, 2))
    src = write_dir(tmp_path / "src", files)
    perturb_speed(src, tmp_path / "ours", (0.9, 1.0, 1.1), 16000)
    kaldi = _kaldi_3way(kaldi_bundle, src, tmp_path / "kaldi")
    for name in ("utt2spk", "text", "utt2uniq"):
        assert (tmp_path / "ours" / name).read_text() == (kaldi / name).read_text(), name
    ours_seg, kaldi_seg = _table(tmp_path / "ours" / "segments"), _table(kaldi / "segments")
    assert ours_seg.keys() == kaldi_seg.keys()
    for utt, row in ours_seg.items():
        rec, start, end = row.split()
        k_rec, k_start, k_end = kaldi_seg[utt].split()
        assert rec == k_rec and abs(float(start) - float(k_start)) <= 0.005 and abs(float(end) - float(k_end)) <= 0.005
    data = load_data_dir(tmp_path / "ours", Report("t"))
    utt = sorted(u for u in data.utterances if u.startswith("sp1.1-"))[0]
    whole = sf.read(data.recordings[data.utterances[utt].recording], dtype="int16")[0].astype(np.float32)
    start = int(round(data.utterances[utt].start * 16000))
    np.testing.assert_array_equal(load_audio(data, utt, sample_rate=16000)[:100], whole[start : start + 100])


def test_a_tone_comes_out_at_factor_times_its_frequency() -> None:
    """Speed perturbation changes tempo and pitch together (sox's `speed`): 440 Hz at 0.9 is 396 Hz, at 1.1 484 Hz,
    and the copy lasts 1/factor as long; the level is kept (the anti-aliasing filter passes the tone)."""
    rate, seconds = 16000, 2.0
    t = np.arange(int(rate * seconds)) / rate
    tone = (8000 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    for factor in (0.9, 1.1, 1.25):
        out = change_speed(tone, factor)
        assert abs(len(out) - len(tone) / factor) <= 1
        spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
        peak = np.argmax(spectrum) * rate / len(out)
        assert abs(peak - 440.0 * factor) < 1.0, (factor, peak)
        assert abs(np.sqrt(np.mean(out[rate // 10 : -rate // 10] ** 2)) - 8000 / np.sqrt(2)) < 80
    assert change_speed(tone, 1.0) is tone


def test_bad_factors_and_audio(an4_root: Path, tmp_path: Path) -> None:
    """Factors that make no sense are refused where they are parsed; a missing recording stops the run with the
    file and the fix, leaving no audio behind, or with skip_bad is a named skip."""
    assert speed_factors("0.9,1.0,1.1") == (0.9, 1.0, 1.1)
    for bad, match in (("fast", "comma-separated"), ("0.9,0.9", "repeats"), ("0", "outside 0.5..2"),
                       ("3", "outside 0.5..2"), ("0.9123457", "ratio of integers")):
        with pytest.raises(UsageError, match=match):
            speed_factors(bad)
    wavs = an4_wavs(an4_root, 3)
    files = kaldi_files(wavs)
    files["wav.scp"] = files["wav.scp"].replace(str(wavs[1][2]), str(tmp_path / "gone.wav"))
    src = write_dir(tmp_path / "src", files)
    with pytest.raises(AudioError, match=r"gone.wav does not exist .* pass --skip-bad"):
        perturb_speed(src, tmp_path / "out", (0.9, 1.0), 16000)
    assert not (tmp_path / "out" / "wav").exists() and not (tmp_path / "out" / "wav.scp").exists()
    report = perturb_speed(src, tmp_path / "out", (0.9, 1.0), 16000, skip_bad=True)
    assert report.skipped["audio file missing"] == [wavs[1][0]]
    assert sorted(_table(tmp_path / "out" / "utt2spk")) == sorted(
        [w[0] for w in wavs if w != wavs[1]] + [f"sp0.9-{w[0]}" for w in wavs if w != wavs[1]])
    with pytest.raises(UsageError, match="elsewhere than its source"):
        perturb_speed(src, src, (0.9,), 16000)
    result = CliRunner().invoke(build_app(["data"]),
                                ["data", "perturb-speed", str(src), str(tmp_path / "o2"), "--factors", "0.9,x"])
    assert result.exit_code == 2 and "comma-separated speed factors" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "o2").exists()
