"""Kaldi data dirs: parsing, validation (keys, sets, sorting, encoding) and audio loading from files, pipes and
ark offsets, on small dirs written in tmp_path that point at real AN4 / yesno audio."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from asr_bn.data import AudioError, load_audio, load_data_dir, write_data_dir
from asr_bn.errors import AsrBnError
from asr_bn.report import Report


def an4_wavs(an4_root: Path, n: int, speakers: tuple[str, ...] = ("fash", "fbbh")) -> list[tuple[str, str, Path]]:
    """(utterance id, speaker, wav path) of the first `n` AN4 training files of `speakers`, sorted by id."""
    per_speaker = -(-n // len(speakers))
    out = [
        (f"{spk}-{wav.stem}", spk, wav)
        for spk in speakers
        for wav in sorted((an4_root / "wav" / "an4_clstk" / spk).glob("*.wav"))[:per_speaker]
    ]
    return sorted(out)[:n]


def write_dir(path: Path, files: dict[str, str | bytes]) -> Path:
    """Write a Kaldi data dir: file name → its text (or bytes)."""
    path.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def kaldi_files(utts: list[tuple[str, str, Path]], wav_entry=lambda p: str(p)) -> dict[str, str]:  # noqa: ANN001
    """wav.scp / utt2spk / text for (utt, spk, wav) triples; `wav_entry` turns a wav path into the wav.scp value."""
    return {
        "wav.scp": "".join(f"{u} {wav_entry(p)}\n" for u, _, p in utts),
        "utt2spk": "".join(f"{u} {s}\n" for u, s, _ in utts),
        "text": "".join(f"{u} HELLO {i}\n" for i, (u, _, _) in enumerate(utts)),
    }


def int16_samples(path: Path) -> np.ndarray:
    return sf.read(path, dtype="int16")[0].astype(np.float32)


@pytest.fixture
def four(an4_root: Path) -> list[tuple[str, str, Path]]:
    return an4_wavs(an4_root, 4)


def test_plain_paths_sorted_and_scaled_like_kaldi(tmp_path: Path, four) -> None:  # noqa: ANN001
    files = kaldi_files(four)
    d = write_dir(tmp_path / "d", files)
    report = Report("t")
    data = load_data_dir(d, report)
    assert list(data.utterances) == [u for u, _, _ in four]
    assert data.spk2utt == {
        "fash": [u for u, s, _ in four if s == "fash"],
        "fbbh": [u for u, s, _ in four if s == "fbbh"],
    }
    utt, _, wav = four[0]
    x = load_audio(data, utt, sample_rate=16000)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, int16_samples(wav))  # Kaldi gives the int16 values, unscaled
    assert data.utterances[utt].text == "HELLO 0"
    assert report.num_skipped == 0 and report.counts["utterances in"] == 4


def test_cat_pipe_and_ark_offset_entries(tmp_path: Path, four) -> None:  # noqa: ANN001
    ark_entries = {}
    rate_wave = {u: (16000, sf.read(p, dtype="int16")[0]) for u, _, p in four[2:]}
    kaldiio.save_ark(str(tmp_path / "wav.ark"), rate_wave, scp=str(tmp_path / "wav_ark.scp"))
    for line in (tmp_path / "wav_ark.scp").read_text().splitlines():
        key, loc = line.split()
        ark_entries[key] = loc
    wav_scp = "".join(f"{u} cat {shlex.quote(str(p))} |\n" for u, _, p in four[:2]) + "".join(
        f"{u} {ark_entries[u]}\n" for u, _, _ in four[2:]
    )
    d = write_dir(tmp_path / "d", {**kaldi_files(four), "wav.scp": wav_scp})
    data = load_data_dir(d, Report("t"))
    for utt, _, wav in four:
        np.testing.assert_array_equal(load_audio(data, utt, sample_rate=16000), int16_samples(wav))


def test_relative_paths_resolve_against_recipe_root(
    yesno_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # not the yesno folder: the paths resolve against an ancestor of the data dir
    report = Report("t")
    data = load_data_dir(yesno_root / "data" / "test_yesno", report)
    assert data.root == yesno_root.resolve()
    assert any("resolved against" in n for n in report.notes)
    # yesno's utt2spk is written `<spk> <utt>`: recognized (unambiguous) and noted, spk2utt agrees.
    assert any("reversed" in n for n in report.notes)
    assert {u.speaker for u in data.utterances.values()} == {"global"}
    x = load_audio(data, "1_0_0_0_0_0_0_0", sample_rate=8000)
    np.testing.assert_array_equal(x, int16_samples(yesno_root / "waves_yesno" / "1_0_0_0_0_0_0_0.wav"))


def test_relative_paths_use_working_dir_first(
    tmp_path: Path, four, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    (tmp_path / "audio").mkdir()
    utt, _, wav = four[0]
    (tmp_path / "audio" / "a.wav").write_bytes(wav.read_bytes())
    write_dir(tmp_path / "data" / "x", {"wav.scp": f"{utt} audio/a.wav\n", "utt2spk": f"{utt} s\n"})
    monkeypatch.chdir(tmp_path)
    report = Report("t")
    data = load_data_dir(Path("data/x"), report)
    assert data.root == Path.cwd() and report.notes == []
    np.testing.assert_array_equal(load_audio(data, utt, sample_rate=16000), int16_samples(wav))


def test_segments_cut_like_extract_segments(tmp_path: Path, four) -> None:  # noqa: ANN001
    rec, spk, wav = four[0]
    n = len(int16_samples(wav))
    dur = n / 16000
    segments = f"a {rec} 0.10 0.35\nb {rec} 0.5 -1\nc {rec} 0.2 {dur + 0.3:.3f}\nd {rec} 0.2 {dur + 0.7:.3f}\n"
    d = write_dir(
        tmp_path / "d",
        {"wav.scp": f"{rec} {wav}\n", "segments": segments, "utt2spk": "".join(f"{u} {spk}\n" for u in "abcd")},
    )
    data = load_data_dir(d, Report("t"))
    full = int16_samples(wav)
    np.testing.assert_array_equal(load_audio(data, "a", sample_rate=16000), full[1600:5600])
    np.testing.assert_array_equal(load_audio(data, "b", sample_rate=16000), full[8000:])
    np.testing.assert_array_equal(load_audio(data, "c", sample_rate=16000), full[3200:])  # overshoot < 0.5 s trimmed
    with pytest.raises(AudioError, match=r"utterance d: segment ends at .* but recording .* lasts"):
        load_audio(data, "d", sample_rate=16000)


def test_spk2utt_only_derives_utt2spk_and_mismatch_is_error(tmp_path: Path, four) -> None:  # noqa: ANN001
    files = kaldi_files(four)
    spk2utt = {}
    for u, s, _ in four:
        spk2utt.setdefault(s, []).append(u)
    files["spk2utt"] = "".join(f"{s} {' '.join(us)}\n" for s, us in spk2utt.items())
    del files["utt2spk"]
    report = Report("t")
    data = load_data_dir(write_dir(tmp_path / "a", files), report)
    assert {u: x.speaker for u, x in data.utterances.items()} == {u: s for u, s, _ in four}
    assert any("derived it from spk2utt" in n for n in report.notes)

    files["utt2spk"] = kaldi_files(four)["utt2spk"].replace(f"{four[0][0]} {four[0][1]}", f"{four[0][0]} other")
    with pytest.raises(AsrBnError, match=f"spk2utt puts utterance {four[0][0]} under speaker {four[0][1]}.*other"):
        load_data_dir(write_dir(tmp_path / "b", files), Report("t"))


def test_duplicate_key_names_file_and_both_lines(tmp_path: Path, four) -> None:  # noqa: ANN001
    files = kaldi_files(four)
    files["text"] += f"{four[1][0]} AGAIN\n"
    with pytest.raises(AsrBnError, match=rf"text: key '{four[1][0]}' appears twice \(lines 2 and 5\)"):
        load_data_dir(write_dir(tmp_path / "d", files), Report("t"))


def test_unsorted_files_are_sorted_with_a_note(tmp_path: Path, four) -> None:  # noqa: ANN001
    files = {name: "".join(reversed(text.splitlines(keepends=True))) for name, text in kaldi_files(four).items()}
    report = Report("t")
    data = load_data_dir(write_dir(tmp_path / "d", files), report)
    assert list(data.utterances) == sorted(u for u, _, _ in four)
    assert sum("not sorted in C-locale order" in n for n in report.notes) == 3


def test_inconsistent_sets_are_counted_and_named(tmp_path: Path, four) -> None:  # noqa: ANN001
    files = kaldi_files(four)
    u0, u1 = four[0][0], four[1][0]
    files["utt2spk"] = "".join(line for line in files["utt2spk"].splitlines(True) if not line.startswith(u0 + " "))
    files["text"] = (
        "".join(line for line in files["text"].splitlines(True) if not line.startswith(u1 + " ")) + "zz-extra HI\n"
    )
    report = Report("t")
    data = load_data_dir(write_dir(tmp_path / "d", files), report)
    assert list(data.utterances) == [u for u, _, _ in four[2:]]
    assert dict(report.skipped) == {
        "missing from utt2spk": [u0],
        "missing from text": [u1],
        "in text but not in wav.scp": ["zz-extra"],
    }
    assert report.counts["utterances in"] == 5  # every id seen in any file: written + skipped


def test_non_utf8_text_names_file_and_line(tmp_path: Path, four) -> None:  # noqa: ANN001
    files: dict[str, str | bytes] = dict(kaldi_files(four))
    lines = files["text"].encode().splitlines(keepends=True)  # type: ignore[union-attr]
    lines[2] = lines[2].replace(b"HELLO", b"H\xe9LLO")  # latin-1 é
    files["text"] = b"".join(lines)
    with pytest.raises(AsrBnError, match=r"text line 3: not valid UTF-8 \(byte 0xe9.*iconv"):
        load_data_dir(write_dir(tmp_path / "d", files), Report("t"))


def test_malformed_lines_and_missing_files_are_errors(tmp_path: Path, four) -> None:  # noqa: ANN001
    files = kaldi_files(four)
    with pytest.raises(AsrBnError, match="no .*wav.scp"):
        load_data_dir(write_dir(tmp_path / "a", {"utt2spk": files["utt2spk"]}), Report("t"))
    report = Report("t")  # no speakers at all: each utterance is its own, said so
    data = load_data_dir(write_dir(tmp_path / "b", {"wav.scp": files["wav.scp"]}), report)
    assert {u.id: u.speaker for u in data.utterances.values()} == {u: u for u, *_ in four}
    assert "neither utt2spk nor spk2utt: each utterance is its own speaker" in report.notes[0]
    with pytest.raises(AsrBnError, match="utt2spk line 1: expected 2 fields, found 3"):
        load_data_dir(write_dir(tmp_path / "c", {**files, "utt2spk": f"{four[0][0]} a b\n"}), Report("t"))
    with pytest.raises(AsrBnError, match="does not exist"):
        load_data_dir(tmp_path / "nowhere", Report("t"))


def _one_utt_dir(tmp_path: Path, entry: str) -> tuple:
    d = write_dir(tmp_path / "d", {"wav.scp": f"u1 {entry}\n", "utt2spk": "u1 s\n"})
    return load_data_dir(d, Report("t")), "u1"


def test_audio_faults(tmp_path: Path, four, rng: np.random.Generator) -> None:  # noqa: ANN001
    wav = four[0][2]
    cases = {
        "missing": (
            str(tmp_path / "nope.wav"),
            "audio file missing",
            r"utterance u1: audio file .*nope.wav does not exist",
        ),
        "empty": (b"", "audio unreadable", r"is empty \(0 bytes\)"),
        "truncated": (wav.read_bytes()[:5000], "audio truncated", r"is truncated \(\d+ bytes of audio missing"),
        "corrupt": (rng.integers(0, 256, 3000, dtype=np.uint8).tobytes(), "audio unreadable", "is not readable audio"),
    }
    for name, (content, reason, message) in cases.items():
        if isinstance(content, bytes):
            path = tmp_path / f"{name}.wav"
            path.write_bytes(content)
            content = str(path)
        data, utt = _one_utt_dir(tmp_path / name, content)
        with pytest.raises(AudioError, match=message) as e:
            load_audio(data, utt, sample_rate=16000)
        assert e.value.reason == reason and "u1" in str(e.value)


def test_failing_pipe_names_command_and_stderr(tmp_path: Path) -> None:
    data, utt = _one_utt_dir(tmp_path, "sh -c 'echo cannot open x.wv1 >&2; exit 3' |")
    with pytest.raises(AudioError, match=r"utterance u1: pipe `sh -c .* \|` exited with status 3: cannot open x.wv1"):
        load_audio(data, utt, sample_rate=16000)


def test_rate_mismatch_and_channels(tmp_path: Path, four) -> None:  # noqa: ANN001
    x = sf.read(four[0][2], dtype="int16")[0]
    stereo = tmp_path / "stereo.wav"
    sf.write(stereo, np.stack([x, x // 2], axis=1), 16000, subtype="PCM_16")
    data, utt = _one_utt_dir(tmp_path / "a", str(stereo))
    with pytest.raises(
        AsrBnError, match=r"sampled at 16000 Hz but the feature config says 8000 Hz; pass --sample-frequency 16000"
    ):
        load_audio(data, utt, sample_rate=8000)
    with pytest.raises(AsrBnError, match=r"has 2 channels; choose one with --channel 0..1"):
        load_audio(data, utt, sample_rate=16000)
    np.testing.assert_array_equal(load_audio(data, utt, sample_rate=16000, channel=1), (x // 2).astype(np.float32))
    with pytest.raises(AsrBnError, match="--channel 2 does not exist"):
        load_audio(data, utt, sample_rate=16000, channel=2)


def test_nist_and_flac_files(tmp_path: Path, four) -> None:  # noqa: ANN001
    x = sf.read(four[0][2], dtype="int16")[0]
    sf.write(tmp_path / "a.sph", x, 16000, format="NIST", subtype="PCM_16")
    sf.write(tmp_path / "a.flac", x, 16000, subtype="PCM_16")
    for name in ("a.sph", "a.flac"):
        data, utt = _one_utt_dir(tmp_path / name.replace(".", "_"), str(tmp_path / name))
        np.testing.assert_array_equal(load_audio(data, utt, sample_rate=16000), x.astype(np.float32))
    cut = tmp_path / "cut.sph"
    cut.write_bytes((tmp_path / "a.sph").read_bytes()[:3000])
    data, utt = _one_utt_dir(tmp_path / "cut", str(cut))
    with pytest.raises(AudioError, match="is truncated"):
        load_audio(data, utt, sample_rate=16000)


def test_write_data_dir_roundtrip(tmp_path: Path, four) -> None:  # noqa: ANN001
    data = load_data_dir(write_dir(tmp_path / "d", kaldi_files(four)), Report("t"))
    keep = [u for u, _, _ in four[1:]]
    write_data_dir(data, tmp_path / "out", keep, {u: 1.5 for u in keep})
    back = load_data_dir(tmp_path / "out", Report("t"))
    assert list(back.utterances) == keep
    assert back.utterances == {u: data.utterances[u] for u in keep}
    assert (tmp_path / "out" / "spk2utt").read_text().splitlines()[0].startswith("fash ")
    assert (tmp_path / "out" / "utt2dur").read_text().splitlines()[0] == f"{keep[0]} 1.5000"


def test_copy_data_dir_normalises_as_told_and_holds_out_speakers(tmp_path: Path) -> None:
    """Case and punctuation change only when asked, each change counted and named; held-out speakers evenly
    spaced; a mixed-case word kept as written is named."""
    from asr_bn.data import copy_data_dir

    src = tmp_path / "src"
    src.mkdir()
    utts = [(f"s{i}-u{j}", f"s{i}") for i in range(4) for j in range(2)]
    (src / "wav.scp").write_text("".join(f"{u} /audio/{u}.wav\n" for u, _ in utts))
    (src / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in utts))
    (src / "text").write_text("".join(f"{u} Hello, World. {'(again)' if u == 's0-u0' else 'YES'}\n" for u, _ in utts))
    report = copy_data_dir(src, tmp_path / "train", tmp_path / "dev", 2, case="upper", strip_punctuation=True)
    assert set(_read_text(tmp_path / "dev" / "utt2spk").values()) == {"s0", "s2"}
    assert _read_text(tmp_path / "train" / "text")["s1-u0"] == "HELLO WORLD YES"
    assert _read_text(tmp_path / "dev" / "text")["s0-u0"] == "HELLO WORLD AGAIN"
    assert report.counts["transcripts normalised"] == 8
    assert "punctuation removed (count): '(' (1), ')' (1), ',' (8), '.' (8)" in report.notes
    assert json.loads((tmp_path / "dev" / "report.json").read_text())["counts"]["utterances in " + str(tmp_path / "dev")] == 4
    kept = copy_data_dir(src, tmp_path / "same")
    assert (tmp_path / "same" / "text").read_text() == (src / "text").read_text()
    assert "transcripts normalised" not in kept.counts
    assert any("2 words mix upper and lower case (Hello, World.)" in n for n in kept.notes)
    with pytest.raises(AsrBnError, match="cannot hold out 4 speakers: the data has 4"):
        copy_data_dir(src, tmp_path / "x", tmp_path / "y", 4)


def _read_text(path: Path) -> dict[str, str]:
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines())


def test_normalize_text_refuses_an_unknown_case() -> None:
    """A case mode other than keep/upper/lower is a UsageError naming it (it was a NameError: UsageError unimported)."""
    from asr_bn.data import normalize_text
    from asr_bn.errors import UsageError
    from asr_bn.report import Report

    with pytest.raises(UsageError, match="case 'title' is not keep, upper or lower"):
        normalize_text({}, "title", False, Report("data"))
