#!/usr/bin/env python3
"""AN4 (CMU) → Kaldi data dirs and a Kaldi dict dir (the input of recipes/any/run.sh).

Reads  AN4_ROOT/etc/{an4_train,an4_test}.{transcription,fileids}, etc/an4.dic, etc/an4.phone, wav/**.wav (or
       the NIST .sph files of CMU's an4_sphere.tar.gz)
Writes OUT/train, OUT/dev (held-out training speakers), OUT/test (130 utterances): wav.scp (absolute paths),
       text (uppercase words, Sphinx markers <s> </s> <sil> ++NOISE++ stripped), utt2spk, spk2utt;
       OUT/dict: lexicon.txt (an4.dic, alternates' "(2)" markers stripped), nonsilence_phones.txt (an4.phone but
       SIL, one set each), silence_phones.txt and optional_silence.txt (SIL);
       OUT/prepare_data.json: the report (utterances skipped, with their reason).

Utterance ids are `<speaker>-<file id without the speaker>` (e.g. fash-an251-b), so sorting by utterance also
sorts by speaker, as Kaldi requires. The speaker is the AN4 speaker folder (wav/an4_clstk/fash/…).

    python local/prepare_data.py ../shared/data/an4 data [--dev-speakers 6] [--speakers N]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from asr_bn.data import DataDir, Utterance, hold_out_speakers, write_data_dir
from asr_bn.errors import AsrBnError
from asr_bn.io import write_text
from asr_bn.report import Report

_LINE = re.compile(r"^(?P<words>.*?)\s*\((?P<id>[^()\s]+)\)\s*$")
_MARKERS = re.compile(r"^(<s>|</s>|<sil>|\+\+.*\+\+)$", re.IGNORECASE)
_ALTERNATE = re.compile(r"\(\d+\)$")


def write_dict_dir(an4_root: Path, lexicon: list[tuple[str, list[str]]], out: Path) -> None:
    """A Kaldi dict dir of AN4: its lexicon, SIL as the (optional) silence, every other an4.phone phone a set."""
    phones = sorted(set(_read(an4_root / "etc" / "an4.phone").split()) - {"SIL"})
    write_text(out / "lexicon.txt", "".join(f"{w} {' '.join(pron)}\n" for w, pron in lexicon))
    write_text(out / "nonsilence_phones.txt", "".join(f"{p}\n" for p in phones))
    write_text(out / "silence_phones.txt", "SIL\n")
    write_text(out / "optional_silence.txt", "SIL\n")


def read_dictionary(an4_root: Path) -> list[tuple[str, list[str]]]:
    """an4.dic as (WORD, phones) pairs in file order; `A(2)` is a second pronunciation of A."""
    path = an4_root / "etc" / "an4.dic"
    phones_path = an4_root / "etc" / "an4.phone"
    known = set(_read(phones_path).split())
    lexicon = []
    for n, line in enumerate(_read(path).splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        word, pron = _ALTERNATE.sub("", fields[0]).upper(), fields[1:]
        unknown = [p for p in pron if p not in known]
        if not pron or unknown:
            raise AsrBnError(f"{path}:{n}: word {word} has {'unknown phones ' + ' '.join(unknown) if pron else 'no phones'}"
                             f" (phones must be listed in {phones_path})")
        lexicon.append((word, pron))
    return lexicon


def read_split(an4_root: Path, split: str, words: set[str], report: Report) -> tuple[dict[str, Utterance], dict[str, str]]:
    """One AN4 split ('train' or 'test'): utterances (one recording each, named like the utterance) and
    recording → absolute wav path."""
    etc = an4_root / "etc"
    paths = {Path(p).name: _audio(an4_root / "wav" / p) for p in _read(etc / f"an4_{split}.fileids").split()}
    utts: dict[str, Utterance] = {}
    wavs: dict[str, str] = {}
    trans = etc / f"an4_{split}.transcription"
    for n, line in enumerate(_read(trans).splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if m is None:
            raise AsrBnError(f"{trans}:{n}: expected `WORDS (file-id)`, got {line!r}")
        file_id = m["id"]
        text = " ".join(w.upper() for w in m["words"].split() if not _MARKERS.match(w))
        wav = paths.get(file_id)
        if wav is None:
            report.skip(file_id, f"not listed in an4_{split}.fileids")
            continue
        speaker = wav.parent.name
        utt = f"{speaker}-{file_id.replace(f'-{speaker}-', '-')}"
        if not wav.is_file():
            report.skip(utt, "wav file missing")
        elif not text:
            report.skip(utt, "empty transcript")
        elif any(w not in words for w in text.split()):
            report.skip(utt, "words not in an4.dic")
        else:
            utts[utt] = Utterance(utt, speaker, utt, text=text)
            wavs[utt] = str(wav.resolve())
    return utts, wavs


def first_speakers(utts: dict[str, Utterance], ids: list[str], n: int | None) -> list[str]:
    """The utterances of the first `n` speakers (sorted) among `ids`; all of them when n is None."""
    if n is None:
        return ids
    keep = set(sorted({utts[u].speaker for u in ids})[:n])
    return [u for u in ids if utts[u].speaker in keep]


def prepare(an4_root: Path, out: Path, num_dev: int = 6, speakers: int | None = None) -> Report:
    """Write out/{train,dev,test,dict} from an AN4 distribution; returns the report (also saved)."""
    if not (an4_root / "etc" / "an4.dic").is_file():
        raise AsrBnError(f"{an4_root} is not an AN4 distribution (no etc/an4.dic); download AN4 from CMU Sphinx "
                         f"(http://www.speech.cs.cmu.edu/databases/an4/) and pass its folder")
    report = Report("an4 prepare_data")
    lexicon = read_dictionary(an4_root)
    write_dict_dir(an4_root, lexicon, out / "dict")
    words = {w for w, _ in lexicon}
    train_all, train_wavs = read_split(an4_root, "train", words, report)
    test, test_wavs = read_split(an4_root, "test", words, report)
    train, dev = hold_out_speakers(train_all, num_dev)
    for name, utts, wavs, ids in (("train", train_all, train_wavs, train), ("dev", train_all, train_wavs, dev),
                                  ("test", test, test_wavs, list(test))):
        ids = first_speakers(utts, sorted(ids), speakers)
        data = DataDir(out / name, {u: wavs[u] for u in ids}, {u: utts[u] for u in ids}, has_text=True)
        write_data_dir(data, out / name, ids)
        report.counts[name] = len(ids)
        report.counts[f"{name} speakers"] = len({utts[u].speaker for u in ids})
    report.counts["lexicon entries"] = len(lexicon)
    report.save(out / "prepare_data.json")
    return report


def _audio(stem: Path) -> Path:
    """The audio file of a file id: RIFF .wav (SphinxTrain's copy), else NIST .sph (CMU's an4_sphere.tar.gz)."""
    wav = stem.with_name(stem.name + ".wav")
    sph = stem.with_name(stem.name + ".sph")
    return sph if not wav.exists() and sph.exists() else wav


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise AsrBnError(f"cannot read {path}: {e.strerror or e} (is the AN4 folder complete?)") from e


def main() -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("an4_root", type=Path, help="AN4 folder holding etc/ and wav/")
    parser.add_argument("out", type=Path, help="output folder (gets train/ dev/ test/ dict/)")
    parser.add_argument("--dev-speakers", type=int, default=6, help="training speakers held out as dev (default 6)")
    parser.add_argument("--speakers", type=int, default=None,
                        help="keep only the first N speakers of each set (fast runs, tests); default: all")
    args = parser.parse_args()
    try:
        report = prepare(args.an4_root, args.out, args.dev_speakers, args.speakers)
    except AsrBnError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        sys.exit(1)
    print("\n".join(report.lines()))


if __name__ == "__main__":
    main()
