"""The AN4 recipe: data prep on the whole corpus, then run.sh --fast stages 1-3 end to end on a few speakers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asr_bn.alignments import read_alignments, read_transition_model
from asr_bn.lang import read_lang

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "an4"


def _prepare_module():  # noqa: ANN202 - the recipe's local script, imported by path
    spec = importlib.util.spec_from_file_location("an4_prepare_data", RECIPE / "local" / "prepare_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _table(path: Path) -> dict[str, str]:
    return dict(line.split(maxsplit=1) if " " in line else (line, "") for line in path.read_text().splitlines())


def _spells(phones: list[str], words: list[str], prons: dict[str, list[list[str]]]) -> bool:
    """Whether `phones` is the concatenation of one pronunciation of each word in turn."""
    if not words:
        return not phones
    return any(phones[: len(p)] == p and _spells(phones[len(p):], words[1:], prons) for p in prons[words[0]])


def test_prepare_data_whole_an4(an4_root: Path, tmp_path: Path) -> None:
    report = _prepare_module().prepare(an4_root, tmp_path)
    assert report.num_skipped == 0
    assert report.counts["train"] + report.counts["dev"] == 948 and report.counts["test"] == 130
    assert report.counts["dev speakers"] == 6 and report.counts["test speakers"] == 10
    assert _table(tmp_path / "dev" / "text")["fash-an251-b"] == "YES"  # `<s> YES </s> (an251-fash-b)`: held out
    text = _table(tmp_path / "train" / "text")
    assert all(w.isupper() and "<" not in w for t in text.values() for w in t.split())
    utt2spk = _table(tmp_path / "test" / "utt2spk")
    assert utt2spk["fcaw-an406-b"] == "fcaw" and all(u.startswith(s + "-") for u, s in utt2spk.items())
    wav = _table(tmp_path / "test" / "wav.scp")["fcaw-an406-b"]
    assert Path(wav).is_absolute() and Path(wav).is_file() and wav.endswith("an406-fcaw-b.wav")
    train_spk = set(_table(tmp_path / "train" / "utt2spk").values())
    dev_spk = set(_table(tmp_path / "dev" / "utt2spk").values())
    assert not train_spk & dev_spk and len(dev_spk) == 6
    lang = read_lang(tmp_path / "lang")
    assert lang.pronunciations()["A"] == [["AH"], ["EY"]]  # A and A(2) of an4.dic
    assert len(lang.real_phone_ids) == 34 and lang.phones["SIL"] == 1


def test_prepare_data_names_bad_input(tmp_path: Path) -> None:
    from asr_bn.errors import AsrBnError

    with pytest.raises(AsrBnError, match="not an AN4 distribution"):
        _prepare_module().prepare(tmp_path, tmp_path / "out")


def test_prepare_data_sphere_files_and_named_skips(tmp_path: Path) -> None:
    """CMU's an4_sphere.tar.gz layout (NIST .sph audio); bad utterances are skipped and named, never dropped."""
    import numpy as np
    import soundfile

    from asr_bn.data import load_audio, load_data_dir
    from asr_bn.report import Report

    root = tmp_path / "an4"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "an4.phone").write_text("AH\nEY\nN\nOW\nSIL\n")
    (root / "etc" / "an4.dic").write_text("A AH\nA(2) EY\nNO N OW\n")
    ids = {"train": ["an1-fabc-b", "an2-fabc-b", "an3-mxyz-b", "an4-mxyz-b"], "test": ["an9-mtst-b"]}
    words = {"an1-fabc-b": "<s> A NO </s>", "an2-fabc-b": "<s> MAYBE </s>", "an3-mxyz-b": "<s> NO ++NOISE++ </s>",
             "an4-mxyz-b": "<s> A </s>", "an9-mtst-b": "A A"}
    for split, files in ids.items():
        folder = "an4_clstk" if split == "train" else "an4test_clstk"
        (root / "etc" / f"an4_{split}.fileids").write_text("".join(f"{folder}/{f.split('-')[1]}/{f}\n" for f in files))
        (root / "etc" / f"an4_{split}.transcription").write_text("".join(f"{words[f]} ({f})\n" for f in files))
        for f in files:
            if f != "an4-mxyz-b":  # its audio is missing
                path = root / "wav" / folder / f.split("-")[1] / f"{f}.sph"
                path.parent.mkdir(parents=True, exist_ok=True)
                soundfile.write(path, np.zeros(4000, np.int16), 16000, format="NIST", subtype="PCM_16")
    report = _prepare_module().prepare(root, tmp_path / "data", num_dev=1)
    assert report.skipped == {"words not in an4.dic": ["fabc-an2-b"], "wav file missing": ["mxyz-an4-b"]}
    assert _table(tmp_path / "data" / "train" / "text") == {"mxyz-an3-b": "NO"}  # ++NOISE++ stripped
    assert _table(tmp_path / "data" / "dev" / "text") == {"fabc-an1-b": "A NO"}
    data = load_data_dir(tmp_path / "data" / "test", Report("test"))
    assert load_audio(data, "mtst-an9-b", sample_rate=16000).shape == (4000,)


@pytest.mark.slow
def test_run_sh_fast_stages_1_to_3(an4_root: Path, tmp_path: Path) -> None:
    work = tmp_path / "an4"
    cmd = ["bash", str(RECIPE / "run.sh"), "--fast", "--speakers", "2", "--dir", str(work), str(an4_root)]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    for stage in ("Stage 1", "Stage 2", "Stage 3"):
        assert stage in run.stdout

    lang = read_lang(work / "data" / "lang")
    prons = lang.pronunciations()
    names = {i: p for p, i in lang.phones.items()}
    tm = read_transition_model(work / "exp" / "mono" / "final.mdl")
    assert (work / "exp" / "mono_ali" / "num_jobs").read_text() == "2\n"
    for ali_dir, prep in (("mono_ali", "train"), ("mono_ali_dev", "dev")):
        frames = {u: int(n) for u, n in _table(work / "prep" / prep / "utt2num_frames").items()}
        text = _table(work / "data" / prep / "text")
        report = json.loads((work / "exp" / ali_dir / "report.json").read_text())
        skipped = [u for utts in report["skipped"].values() for u in utts]
        labels = {lab.utt: lab.values for lab in read_alignments(work / "exp" / ali_dir)}
        assert sorted([*labels, *skipped]) == sorted(frames)  # every utterance aligned or named
        assert len(labels) >= 0.5 * len(frames)  # a model from 2 speakers cannot align every unseen dev utterance
        for utt, tids in labels.items():
            assert len(tids) == frames[utt]
            phones = [names[p] for p, _, _ in tm.phone_segments(tids) if names[p] != "SIL"]
            assert _spells(phones, text[utt].split(), prons), utt
    wer_line = (work / "exp" / "mono" / "decode_test" / "wer").read_text().splitlines()[0]
    assert wer_line.startswith("%WER") and float(wer_line.split()[1]) < 90.0  # well below chance even when tiny

    again = subprocess.run([*cmd[:2], "--stage", "3", *cmd[2:]], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("skipping") == 4  # mono, both ali dirs, decode: nothing redone
    other = subprocess.run([*cmd[:4], "3", *cmd[5:]], capture_output=True, text=True, env=env)
    assert other.returncode == 1 and "made with other options" in other.stderr
