"""Lang folders: Kaldi's yesno lang reads back, written folders round-trip, L has Kaldi's optional-silence shape."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from asr_bn.errors import AsrBnError
from asr_bn.kaldi_ext import kaldifst
from asr_bn.lang import add_lex_disambig, lexicon_fst, read_lang, read_lexicon, write_lang

LEXICON = [("A", ["AH"]), ("A", ["EY"]), ("EIGHT", ["EY", "T"]), ("TWO", ["T", "UW"]), ("TOO", ["T", "UW"])]


def test_reads_kaldi_yesno_lang(yesno_root: Path) -> None:
    lang = read_lang(yesno_root / "data" / "lang")  # lexicon from phones/align_lexicon.txt, silence from phones/
    assert lang.silence_phone == "SIL"
    assert lang.phones["SIL"] == 1 and lang.words["YES"] == 3
    assert lang.real_phone_ids == [1, 2, 3]
    assert lang.disambig_phone_ids == [4, 5]


def test_add_lex_disambig_as_kaldi() -> None:
    # EY is a prefix of EY T; T UW is a homophone pair: both get #n, as add_lex_disambig.pl does
    out, top = add_lex_disambig(LEXICON)
    assert out == [("A", ["AH"]), ("A", ["EY", "#1"]), ("EIGHT", ["EY", "T"]), ("TWO", ["T", "UW", "#1"]),
                   ("TOO", ["T", "UW", "#2"])]
    assert top == 2


def test_write_lang_round_trip(tmp_path: Path) -> None:
    lang = write_lang(LEXICON, tmp_path / "lang")
    assert list(lang.phones) == ["<eps>", "SIL", "AH", "EY", "T", "UW", "#0", "#1", "#2", "#3"]
    assert list(lang.words) == ["<eps>", "A", "EIGHT", "TOO", "TWO", "#0", "<s>", "</s>"]
    again = read_lang(tmp_path / "lang")
    assert again == lang
    assert read_lexicon(tmp_path / "lang" / "lexicon.txt") == LEXICON
    assert lang.pronunciations()["A"] == [["AH"], ["EY"]]


def test_bad_lexicons_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "lexicon.txt").write_text("A AH\nB\n")
    with pytest.raises(AsrBnError, match=r"lexicon.txt:2: word 'B' has no phones"):
        read_lexicon(tmp_path / "lexicon.txt")
    with pytest.raises(AsrBnError, match="reserved"):
        write_lang([("A", ["#1"])], tmp_path / "lang")
    lang_dir = tmp_path / "lang2"
    write_lang(LEXICON, lang_dir)
    (lang_dir / "words.txt").write_text("<eps> 0\nA 1\n")
    with pytest.raises(AsrBnError, match="words.txt lacks lexicon word 'EIGHT'"):
        read_lang(lang_dir)
    (lang_dir / "phones.txt").write_text("<eps> 0\n\nSIL one\n")  # blank lines are skipped, bad ones named
    with pytest.raises(AsrBnError, match=r"phones.txt:3: expected `SYMBOL ID`, got 'SIL one'"):
        read_lang(lang_dir)
    for missing in ("phones.txt", "lexicon.txt"):
        (lang_dir / missing).unlink()
        with pytest.raises(AsrBnError, match=rf"^{lang_dir / missing} is missing; check the (lang folder|path)$"):
            read_lang(lang_dir)


def test_lexicon_fst_optional_silence(tmp_path: Path) -> None:
    lang = write_lang([("A", ["AH"]), ("EIGHT", ["EY", "T"])], tmp_path / "lang")
    fst = lexicon_fst(lang, sil_prob=0.2)
    assert fst.is_olabel_sorted
    arcs = {(s, a.ilabel, a.olabel, a.nextstate): a.weight.value
            for s in range(fst.num_states) for a in kaldifst.ArcIterator(fst, s)}
    sil, ah, ey, t = (lang.phones[p] for p in ("SIL", "AH", "EY", "T"))
    no_sil, with_sil = -math.log(0.8), -math.log(0.2)
    assert arcs[(0, 0, 0, 1)] == pytest.approx(no_sil) and arcs[(0, 0, 0, 2)] == pytest.approx(with_sil)
    assert arcs[(2, sil, 0, 1)] == 0.0
    assert arcs[(1, ah, lang.words["A"], 1)] == pytest.approx(no_sil)
    assert arcs[(1, ah, lang.words["A"], 2)] == pytest.approx(with_sil)
    mid = next(n for (s, i, o, n) in arcs if s == 1 and i == ey)
    assert arcs[(1, ey, lang.words["EIGHT"], mid)] == 0.0 and (mid, t, 0, 1) in arcs and (mid, t, 0, 2) in arcs
    assert fst.final(1).value == 0.0 and math.isinf(fst.final(0).value)
