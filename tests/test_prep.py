"""`asr-bn prep kaldi|wsj` through the CLI: the prepared layout, values against kaldi-native-fbank, idempotency,
crash safety, the lock, and each bad input of issue 2 §6 / issue 8 with its exit code and one-line message."""

from __future__ import annotations

import errno
import json
import os
import shlex
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from asr_bn.features import FeaturePipeline
from asr_bn.io import OutputLock, read_matrix
from asr_bn_cli.main import build_app
from test_data import an4_wavs, kaldi_files, write_dir
from test_train import no_partial_files
from test_train import snapshot as snapshot_tree

app = build_app()

runner = CliRunner()
FAST = ["--dither", "0", "--nj", "2"]


def prep(*args: str | Path) -> object:
    return runner.invoke(app, ["prep", *map(str, args)])


def one_line_error(result) -> str:  # noqa: ANN001
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


def inputs(data_dir: Path) -> dict[Path, bytes]:
    """The bytes of every file of a data dir and of every audio file its wav.scp names (paths and pipes' files)."""
    audio = {Path(w) for line in (data_dir / "wav.scp").read_bytes().splitlines() for w in line.decode().split()[1:]}
    return snapshot_tree(data_dir) | {p: p.read_bytes() for p in sorted(audio) if p.is_absolute() and p.is_file()}


def complete_or_absent(out: Path) -> None:
    """OUT_DIR holds a complete prep (report.json, every file it lists, each utterance's features) or no file under
    a final name; never a temporary file, the staging dir or the lock."""
    if not out.exists():
        return
    no_partial_files(out)
    names = {p.name for p in out.iterdir()}
    if "report.json" not in names:
        assert not names, names
        return
    report = json.loads((out / "report.json").read_text())
    assert names == {*report["files"], "report.json"}, names
    feats = dict(kaldiio.load_scp_sequential(str(out / "feats.scp")))
    frames = {u: int(n) for u, n in (line.split() for line in (out / "utt2num_frames").read_text().splitlines())}
    assert len(feats) == report["counts"]["written"] and {u: len(m) for u, m in feats.items()} == frames


@pytest.fixture
def an4_dir(tmp_path: Path, an4_root: Path) -> Path:
    """A 4-utterance, 2-speaker data dir of real AN4 audio (absolute paths)."""
    return write_dir(tmp_path / "data", kaldi_files(an4_wavs(an4_root, 4)))


def test_yesno_8khz_layout(yesno_root: Path, tmp_path: Path) -> None:
    conf = tmp_path / "fbank.conf"
    conf.write_text("--sample-frequency=8000  # yesno is 8 kHz\n--num-mel-bins=23\n")
    out = tmp_path / "out"
    result = prep("kaldi", yesno_root / "data" / "test_yesno", out, "--config", conf, *FAST)
    assert result.exit_code == 0, result.output
    assert "prep: utterances in 29, written 29, skipped 0" in result.output
    assert {p.name for p in out.iterdir()} == {
        "wav.scp",
        "utt2spk",
        "spk2utt",
        "text",
        "utt2dur",
        "feats.ark",
        "feats.scp",
        "cmvn.ark",
        "cmvn.scp",
        "utt2num_frames",
        "pipeline.json",
        "report.json",
    }
    feats = dict(kaldiio.load_scp_sequential(str(out / "feats.scp")))
    frames = dict(line.split() for line in (out / "utt2num_frames").read_text().splitlines())
    assert list(feats) == sorted(feats) and len(feats) == 29
    assert all(m.shape == (int(frames[u]), 23) and m.dtype == np.float32 for u, m in feats.items())
    cmvn = kaldiio.load_scp(str(out / "cmvn.scp"))
    assert list(cmvn) == ["global"]  # yesno has one speaker, named "global"
    stats = cmvn["global"]
    assert stats.shape == (2, 24) and stats.dtype == np.float64
    assert stats[0, -1] == sum(int(n) for n in frames.values())
    np.testing.assert_allclose(stats[0, :-1], sum(m.sum(0, dtype=np.float64) for m in feats.values()), rtol=1e-9)
    pipeline = FeaturePipeline.load(out / "pipeline.json")
    assert pipeline.fbank.sample_frequency == 8000 and pipeline.fbank.num_mel_bins == 23 and pipeline.cmvn == "speaker"
    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["written"] == 29 and report["skipped"] == {}
    # The copied utt2spk is the standard `<utt> <spk>` even though yesno's is reversed; paths are absolute.
    assert (out / "utt2spk").read_text().splitlines()[0] == "1_0_0_0_0_0_0_0 global"
    assert Path((out / "wav.scp").read_text().split()[1]).is_file()


def test_features_match_kaldi_native_fbank(an4_dir: Path, tmp_path: Path) -> None:
    knf = pytest.importorskip("kaldi_native_fbank")
    out = tmp_path / "out"
    assert prep("kaldi", an4_dir, out, *FAST).exit_code == 0
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 40
    for line in (an4_dir / "wav.scp").read_text().splitlines()[:2]:
        utt, path = line.split()
        fb = knf.OnlineFbank(opts)
        fb.accept_waveform(16000, sf.read(path, dtype="int16")[0].astype(np.float32).tolist())
        fb.input_finished()
        ref = np.stack([fb.get_frame(i) for i in range(fb.num_frames_ready)])
        ours = kaldiio.load_mat(kaldiio.load_scp(str(out / "feats.scp"))._dict[utt])
        assert ours.shape == ref.shape
        strong = ref > ref.max(axis=1, keepdims=True) - 10  # bins within 10 nats of the frame's peak
        assert np.abs(ours - ref)[strong].max() < 1e-3


def test_speaker_utterance_global_none_and_compress(an4_dir: Path, tmp_path: Path) -> None:
    keys = {}
    for mode in ("speaker", "utterance", "global"):
        out = tmp_path / mode
        assert prep("kaldi", an4_dir, out, "--cmvn", mode, *FAST).exit_code == 0
        keys[mode] = list(kaldiio.load_scp(str(out / "cmvn.scp")))
    assert keys["speaker"] == ["fash", "fbbh"]
    assert keys["utterance"] == [line.split()[0] for line in (an4_dir / "wav.scp").read_text().splitlines()]
    assert keys["global"] == ["global"]
    assert prep("kaldi", an4_dir, tmp_path / "none", "--cmvn", "none", *FAST).exit_code == 0
    assert not (tmp_path / "none" / "cmvn.scp").exists()

    out = tmp_path / "compressed"
    assert prep("kaldi", an4_dir, out, "--compress", *FAST).exit_code == 0
    assert (out / "feats.ark").stat().st_size < 0.5 * (tmp_path / "speaker" / "feats.ark").stat().st_size
    raw = dict(kaldiio.load_scp_sequential(str(tmp_path / "speaker" / "feats.scp")))
    scp = out / "feats.scp"  # read as training does: compressed matrices expanded as Kaldi expands them
    packed = {u: read_matrix(loc, scp, u) for u, loc in (line.split() for line in scp.read_text().splitlines())}
    for utt in raw:
        np.testing.assert_allclose(packed[utt], raw[utt], atol=0.05 * np.ptp(raw[utt]))
    # CMVN stats are those of the compressed values, as Kaldi's compute-cmvn-stats on feats.scp would give.
    stats = kaldiio.load_scp(str(out / "cmvn.scp"))["fash"]
    fash = [m for u, m in packed.items() if u.startswith("fash")]
    np.testing.assert_allclose(stats[0, :-1], np.sum([m.sum(0, dtype=np.float64) for m in fash], axis=0), rtol=1e-9)


def test_idempotent_and_force(an4_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert prep("kaldi", an4_dir, out, *FAST).exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = prep("kaldi", an4_dir, out, *FAST)
    assert again.exit_code == 0 and "already done" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    (out / "pdf.ark").write_bytes(b"targets joined to the old features")
    forced = prep("kaldi", an4_dir, out, *FAST, "--force")
    assert forced.exit_code == 0 and "already done" not in forced.output and "written 4" in forced.output
    assert not (out / "pdf.ark").exists() and "removed pdf.ark of the earlier run" in forced.output
    changed = prep("kaldi", an4_dir, out, *FAST, "--num-mel-bins", "30")  # another option: redone
    assert changed.exit_code == 0 and "already done" not in changed.output
    assert next(iter(kaldiio.load_scp(str(out / "feats.scp")).values())).shape[1] == 30


def test_crash_mid_run_leaves_no_partial_file(an4_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asr_bn.prep

    real = asr_bn.prep.compute_fbank
    calls = []

    def crash_on_second_batch(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as Ctrl-C mid-run
        return real(*args, **kwargs)

    monkeypatch.setattr(asr_bn.prep, "compute_fbank", crash_on_second_batch)
    monkeypatch.setattr(asr_bn.prep, "_BATCH_SAMPLES", 1)  # one utterance per batch
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        asr_bn.prep.prepare_kaldi(an4_dir, out, FeaturePipeline())
    assert not out.exists()  # no final name, no staging dir, no lock: the dir the run created is gone too
    monkeypatch.setattr(asr_bn.prep, "compute_fbank", real)
    assert prep("kaldi", an4_dir, out, *FAST).exit_code == 0  # the rerun completes


def test_enospc_while_writing_features_keeps_previous_files(
    an4_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    assert prep("kaldi", an4_dir, out, *FAST).exit_code == 0
    before, data = snapshot(out), inputs(an4_dir)
    real = kaldiio.save_ark
    calls = []

    def disk_full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(kaldiio, "save_ark", disk_full)
    result = prep("kaldi", an4_dir, out, *FAST, "--force")
    assert result.exit_code == 1
    assert "could not write" in one_line_error(result) and "feats.ark: No space left on device" in one_line_error(
        result
    )
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == sorted(before)
    complete_or_absent(out)  # the earlier complete output, whole
    assert inputs(an4_dir) == data


def test_second_run_is_refused_by_the_lock(an4_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    before = inputs(an4_dir)
    with OutputLock(out):  # held by this (live) process, as by a concurrent run
        result = prep("kaldi", an4_dir, out, *FAST)
        assert [p.name for p in out.iterdir()] == [".asr-bn.lock"]  # the holder's lock, nothing of the refused run
    assert result.exit_code == 1
    assert f"{out} is in use by another asr-bn run (pid {os.getpid()})" in one_line_error(result)
    assert not out.exists()  # the holder created it and left it empty: it removed it again
    assert inputs(an4_dir) == before


# ---------------------------------------------------------------------------------------------------------------
# Bad input (issue 2 §6, issue 8): exit code and the one-line message; --skip-bad turns bad audio into named skips.


def _with_bad_entry(an4_dir: Path, entry: str) -> tuple[Path, str]:
    """The AN4 dir with its second utterance's wav.scp entry replaced; returns (dir, that utterance)."""
    lines = (an4_dir / "wav.scp").read_text().splitlines()
    utt = lines[1].split()[0]
    lines[1] = f"{utt} {entry}"
    (an4_dir / "wav.scp").write_text("\n".join(lines) + "\n")
    return an4_dir, utt


@pytest.mark.parametrize(
    "fault, message, reason",
    [
        ("missing", r"utterance {utt}: audio file .*gone.wav does not exist .*--skip-bad", "audio file missing"),
        ("truncated", r"utterance {utt}: .*bad.wav is truncated \(\d+ bytes of audio missing", "audio truncated"),
        ("corrupt", r"utterance {utt}: .*bad.wav is not readable audio", "audio unreadable"),
        (
            "pipe",
            r"utterance {utt}: pipe `cat .*gone.wav \|` exited with status 1: cat: .*gone.wav: No such file",
            "pipe failed",
        ),
    ],
)
def test_bad_audio_is_error_or_named_skip(an4_dir: Path, tmp_path: Path, fault: str, message: str, reason: str) -> None:
    import re

    good = Path((an4_dir / "wav.scp").read_text().splitlines()[1].split()[1])
    bad = tmp_path / "bad.wav"
    if fault == "truncated":
        bad.write_bytes(good.read_bytes()[:4000])
    elif fault == "corrupt":
        bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" * 100)
    entry = {"missing": str(tmp_path / "gone.wav"), "pipe": f"cat {tmp_path / 'gone.wav'} |"}.get(fault, str(bad))
    data_dir, utt = _with_bad_entry(an4_dir, entry)
    before = inputs(data_dir)
    result = prep("kaldi", data_dir, tmp_path / "out", *FAST)
    assert result.exit_code == 1
    assert re.search(message.format(utt=re.escape(utt)), one_line_error(result)), result.output
    assert "--skip-bad" in one_line_error(result)  # the fix
    assert not (tmp_path / "out" / "feats.ark").exists() and not (tmp_path / "out" / "report.json").exists()
    complete_or_absent(tmp_path / "out")
    assert inputs(data_dir) == before

    skipped = prep("kaldi", data_dir, tmp_path / "out", *FAST, "--skip-bad")
    assert skipped.exit_code == 0, skipped.output
    assert f"skipped 1 ({reason}): {utt}" in skipped.output
    assert utt not in kaldiio.load_scp(str(tmp_path / "out" / "feats.scp"))
    assert utt not in (tmp_path / "out" / "text").read_text()
    assert json.loads((tmp_path / "out" / "report.json").read_text())["skipped"] == {reason: [utt]}
    complete_or_absent(tmp_path / "out")
    assert inputs(data_dir) == before  # inputs untouched, the audio too


def test_empty_and_too_short_audio_are_named_skips(an4_dir: Path, tmp_path: Path) -> None:
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.int16), 16000, subtype="PCM_16")
    sf.write(tmp_path / "short.wav", np.ones(300, np.int16), 16000, subtype="PCM_16")  # < 400 samples = one frame
    lines = (an4_dir / "wav.scp").read_text().splitlines()
    lines[0] = f"{lines[0].split()[0]} {tmp_path / 'empty.wav'}"
    lines[2] = f"{lines[2].split()[0]} {tmp_path / 'short.wav'}"
    (an4_dir / "wav.scp").write_text("\n".join(lines) + "\n")
    before = inputs(an4_dir)
    result = prep("kaldi", an4_dir, tmp_path / "out", *FAST)
    assert result.exit_code == 0
    assert f"skipped 2 (shorter than one frame): {lines[0].split()[0]} {lines[2].split()[0]}" in result.output
    assert "written 2" in result.output
    complete_or_absent(tmp_path / "out")
    assert inputs(an4_dir) == before

    (tmp_path / "zero.wav").write_bytes(b"")  # a 0-byte file is not audio at all: an error
    _with_bad_entry(an4_dir, str(tmp_path / "zero.wav"))
    before = inputs(an4_dir)
    result = prep("kaldi", an4_dir, tmp_path / "out2", *FAST)
    assert result.exit_code == 1 and "zero.wav is empty (0 bytes)" in one_line_error(result)
    assert "--skip-bad" in one_line_error(result)
    complete_or_absent(tmp_path / "out2")
    assert inputs(an4_dir) == before


def test_multichannel_needs_channel(an4_dir: Path, tmp_path: Path) -> None:
    good = Path((an4_dir / "wav.scp").read_text().splitlines()[1].split()[1])
    x = sf.read(good, dtype="int16")[0]
    sf.write(tmp_path / "stereo.wav", np.stack([x, x], axis=1), 16000, subtype="PCM_16")
    data_dir, utt = _with_bad_entry(an4_dir, str(tmp_path / "stereo.wav"))
    result = prep("kaldi", data_dir, tmp_path / "out", *FAST)
    assert result.exit_code == 1
    assert (
        f"utterance {utt}: {tmp_path / 'stereo.wav'} has 2 channels; choose one with --channel 0..1"
        in one_line_error(result)
    )
    result = prep("kaldi", data_dir, tmp_path / "out", *FAST, "--channel", "0", "--skip-bad")
    assert (
        result.exit_code == 0 and "written 4" in result.output
    )  # channel 0 of the stereo file, mono files as they are


def test_sample_rate_mismatch(an4_dir: Path, tmp_path: Path) -> None:
    """Audio at another rate than --sample-frequency is an error naming it, both rates and both fixes; with
    --skip-bad a named skip like other bad audio (never resampled); every file at that rate skipped is an error."""
    good = Path((an4_dir / "wav.scp").read_text().splitlines()[1].split()[1])
    sf.write(tmp_path / "8k.wav", sf.read(good, dtype="int16")[0], 8000, subtype="PCM_16")
    data_dir, utt = _with_bad_entry(an4_dir, str(tmp_path / "8k.wav"))
    before = inputs(data_dir)
    result = prep("kaldi", data_dir, tmp_path / "out", *FAST)
    assert result.exit_code == 1
    assert (
        f"utterance {utt}: {tmp_path / '8k.wav'} is sampled at 8000 Hz but the feature config says 16000 Hz; "
        "pass --sample-frequency 8000 (asr-bn never resamples), or --skip-bad to skip such audio"
    ) in one_line_error(result)
    complete_or_absent(tmp_path / "out")
    assert inputs(data_dir) == before

    reason = "sampled at another rate than --sample-frequency"
    skipped = prep("kaldi", data_dir, tmp_path / "out", *FAST, "--skip-bad")
    assert skipped.exit_code == 0, skipped.output
    assert f"skipped 1 ({reason}): {utt}" in skipped.output and "written 3" in skipped.output
    assert json.loads((tmp_path / "out" / "report.json").read_text())["skipped"] == {reason: [utt]}
    assert utt not in kaldiio.load_scp(str(tmp_path / "out" / "feats.scp"))
    complete_or_absent(tmp_path / "out")
    assert inputs(data_dir) == before

    every = prep("kaldi", data_dir, tmp_path / "out2", *FAST, "--sample-frequency", "8000", "--skip-bad")
    assert every.exit_code == 0 and f"skipped 3 ({reason})" in every.output and "written 1" in every.output
    result = prep("kaldi", an4_dir, tmp_path / "out3", *FAST, "--sample-frequency", "22050", "--skip-bad")
    assert result.exit_code == 1
    assert f"could be prepared ({reason}: 4)" in one_line_error(result)
    complete_or_absent(tmp_path / "out3")


@pytest.mark.parametrize(
    "fault, expected",
    [
        ("duplicate", r"utt2spk: key '{u1}' appears twice \(lines 2 and 5\); keep one of the two lines"),
        ("non-utf8", r"text line 2: not valid UTF-8 \(byte 0xff at column \d+\); re-encode the file as UTF-8, e\.g\. "
                     r"`iconv -f latin1 -t utf-8`"),
    ],
)
def test_data_dir_errors(an4_dir: Path, tmp_path: Path, fault: str, expected: str) -> None:
    import re

    u1 = (an4_dir / "wav.scp").read_text().splitlines()[1].split()[0]
    if fault == "duplicate":
        with open(an4_dir / "utt2spk", "a") as f:
            f.write(f"{u1} someone\n")
    else:
        text = (an4_dir / "text").read_bytes().splitlines(keepends=True)
        text[1] = text[1].replace(b"HELLO", b"HE\xffLLO")
        (an4_dir / "text").write_bytes(b"".join(text))
    before = inputs(an4_dir)
    result = prep("kaldi", an4_dir, tmp_path / "out", *FAST)
    assert result.exit_code == 1
    assert re.search(expected.format(u1=re.escape(u1)), one_line_error(result)), result.output
    assert not (tmp_path / "out").exists()  # validation fails before OUT_DIR is created
    assert inputs(an4_dir) == before


def test_utt2spk_lacking_an_utterance_is_a_named_skip(an4_dir: Path, tmp_path: Path) -> None:
    lines = (an4_dir / "utt2spk").read_text().splitlines()
    missing = lines.pop(2).split()[0]
    (an4_dir / "utt2spk").write_text("\n".join(lines) + "\n")
    before = inputs(an4_dir)
    result = prep("kaldi", an4_dir, tmp_path / "out", *FAST)
    assert result.exit_code == 0
    assert f"skipped 1 (missing from utt2spk): {missing}" in result.output and "written 3" in result.output
    complete_or_absent(tmp_path / "out")
    assert missing not in (tmp_path / "out" / "text").read_text()
    assert inputs(an4_dir) == before


def test_unsorted_input_is_sorted_with_a_note(an4_dir: Path, tmp_path: Path) -> None:
    lines = (an4_dir / "wav.scp").read_text().splitlines()
    (an4_dir / "wav.scp").write_text("\n".join(reversed(lines)) + "\n")
    before = inputs(an4_dir)
    result = prep("kaldi", an4_dir, tmp_path / "out", *FAST)
    assert result.exit_code == 0 and "note: wav.scp was not sorted in C-locale order; sorted it" in result.output
    assert (tmp_path / "out" / "wav.scp").read_text().splitlines() == lines
    complete_or_absent(tmp_path / "out")
    assert inputs(an4_dir) == before  # sorted in the output only


def test_usage_errors_exit_2(an4_dir: Path, tmp_path: Path) -> None:
    result = prep("kaldi", tmp_path / "nowhere", tmp_path / "out")
    assert result.exit_code == 2 and "data dir" in one_line_error(result) and "does not exist" in one_line_error(result)
    conf = tmp_path / "bad.conf"
    conf.write_text("--num-ceps=13\n")
    result = prep("kaldi", an4_dir, tmp_path / "out", "--config", conf)
    assert result.exit_code == 2 and "MFCC/PLP option" in one_line_error(result)
    assert prep("kaldi", an4_dir, tmp_path / "out", "--nj", "0").exit_code == 2
    assert prep("kaldi", an4_dir, tmp_path / "out", "--cmvn", "bogus").exit_code == 2
    if not torch.cuda.is_available():
        result = prep("kaldi", an4_dir, tmp_path / "out", "--device", "cuda")
        assert result.exit_code == 2 and "torch sees no CUDA GPU" in one_line_error(result)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------
# prep wsj on a miniature egs/wsj/s5 tree built from AN4 audio


def _wsj_tree(root: Path, an4_root: Path, program: str = "cat") -> Path:
    """s5/data/{train_si284,test_dev93,test_eval92} with `PROGRAM x.wav |` pipes, as Kaldi's WSJ data prep writes."""
    wavs = an4_wavs(an4_root, 8, speakers=("fash", "fbbh", "fclc", "fejs"))
    sets = {"train_si284": wavs[:4], "test_dev93": wavs[4:6], "test_eval92": wavs[6:]}
    for name, utts in sets.items():
        entry = (
            (lambda p: f"{program} {shlex.quote(str(p))} |")
            if program == "cat"
            else (lambda p: f"{program} -f wav {p} |")
        )
        write_dir(root / "s5" / "data" / name, kaldi_files(utts, wav_entry=entry))
    return root / "s5"


def test_wsj_preset_on_a_miniature_tree(an4_root: Path, tmp_path: Path) -> None:
    s5 = _wsj_tree(tmp_path, an4_root)
    out = tmp_path / "wsj"
    result = prep("wsj", s5, out, *FAST)
    assert result.exit_code == 0, result.output
    assert result.output.count("wrote") == 3
    for name, n in (("train_si284", 4), ("test_dev93", 2), ("test_eval92", 2)):
        feats = kaldiio.load_scp(str(out / name / "feats.scp"))
        assert len(feats) == n and all(m.shape[1] == 40 for m in feats.values())
        assert FeaturePipeline.load(out / name / "pipeline.json").fbank.sample_frequency == 16000
        assert (out / name / "wav.scp").read_text().startswith(f"{sorted(feats)[0]} cat ")  # pipes kept as written
    again = prep("wsj", s5, out, *FAST, "--sets", "train_si284,test_dev93")
    assert again.exit_code == 0 and again.output.count("already done") == 2
    missing = prep("wsj", s5, out, "--sets", "train_si84")
    assert (
        missing.exit_code == 1
        and "has no train_si84" in one_line_error(missing)
        and "--sets" in one_line_error(missing)
    )


def test_wsj_missing_sph2pipe_says_where_and_sph2pipe_option(an4_root: Path, tmp_path: Path) -> None:
    fake = "/opt/kaldi/tools/sph2pipe_v2.5/sph2pipe"  # where a Kaldi install would have it; absent here
    s5 = _wsj_tree(tmp_path, an4_root, program=fake)
    result = prep("wsj", s5, tmp_path / "wsj", *FAST)
    assert result.exit_code == 1
    message = one_line_error(result)
    assert f"sph2pipe not found at {fake}" in message
    assert "KALDI_ROOT/tools/sph2pipe_v2.5/sph2pipe" in message and "--sph2pipe PATH" in message
    # A stand-in sph2pipe (`sph2pipe -f wav FILE` prints FILE as wav; ours is already wav).
    tool = tmp_path / "bin" / "sph2pipe"
    tool.parent.mkdir()
    tool.write_text('#!/bin/sh\nexec cat "$3"\n')
    tool.chmod(0o755)
    result = prep("wsj", s5, tmp_path / "wsj", *FAST, "--sph2pipe", tool, "--sets", "test_dev93")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "wsj" / "test_dev93" / "wav.scp").read_text().split()[1] == str(tool.resolve())
    result = prep("wsj", s5, tmp_path / "wsj", "--sph2pipe", tmp_path / "nope")
    assert result.exit_code == 2 and "is not an executable file" in one_line_error(result)


def test_cli_has_one_option_per_fbank_field() -> None:
    import dataclasses

    from asr_bn.features import FbankConfig

    result = runner.invoke(app, ["prep", "kaldi", "--help"], terminal_width=200, env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for field in dataclasses.fields(FbankConfig):
        assert f"--{field.metadata['kaldi']}" in result.output


def test_command_line_options_override_the_config(an4_dir: Path, tmp_path: Path) -> None:
    conf = tmp_path / "fbank.conf"
    conf.write_text("--num-mel-bins=30\n--dither=0\n--use-energy=true\n")
    out = tmp_path / "out"
    assert prep("kaldi", an4_dir, out, "--config", conf, "--num-mel-bins", "24", "--nj", "1").exit_code == 0
    fbank = FeaturePipeline.load(out / "pipeline.json").fbank
    assert (fbank.num_mel_bins, fbank.dither, fbank.use_energy) == (24, 0.0, True)
    assert next(iter(kaldiio.load_scp(str(out / "feats.scp")).values())).shape[1] == 25
