"""Pronunciation lexicons and Kaldi `data/lang` folders: lexicon.txt, phones.txt, words.txt, and the lexicon FST L.

One place for what Kaldi's utils/prepare_lang.sh does (position-independent phones): recipes write a lang folder
with `write_lang`, the HMM-GMM aligner and graph builders read it with `read_lang` and build L with
`lexicon_fst` (optional silence between words, as Kaldi's make_lexicon_fst.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from asr_bn.config import SIL_PROB
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import read_rows, require_dir, write_text

if TYPE_CHECKING:
    from asr_bn.kaldi_ext import kaldifst

__all__ = ["Lang", "read_lexicon", "add_lex_disambig", "write_lang", "read_lang", "lexicon_fst", "read_symbol_table"]

EPS = "<eps>"


@dataclass
class Lang:
    """A lexicon with its symbol tables: phone and word ids as in Kaldi's phones.txt / words.txt.

    `lexicon` holds (word, phones) pairs in file order; a word with alternative pronunciations appears once per
    pronunciation. `silence_phone` is the optional silence inserted between words.
    """

    lexicon: list[tuple[str, list[str]]]
    phones: dict[str, int]
    words: dict[str, int]
    silence_phone: str = "SIL"

    @property
    def disambig_phone_ids(self) -> list[int]:
        """Ids of the disambiguation symbols #0, #1, … in phones.txt."""
        return [i for p, i in self.phones.items() if p.startswith("#")]

    @property
    def real_phone_ids(self) -> list[int]:
        """Ids of the phones that get an HMM (all but <eps> and the #n symbols), sorted."""
        return sorted(i for p, i in self.phones.items() if p != EPS and not p.startswith("#"))

    def pronunciations(self) -> dict[str, list[list[str]]]:
        """Word → its pronunciations, in lexicon order."""
        out: dict[str, list[list[str]]] = {}
        for word, pron in self.lexicon:
            out.setdefault(word, []).append(pron)
        return out


def read_lexicon(path: str | Path) -> list[tuple[str, list[str]]]:
    """Read a Kaldi lexicon.txt (`WORD PH1 PH2 …` per line) into (word, phones) pairs, in file order."""
    path = Path(path)
    lexicon: list[tuple[str, list[str]]] = []
    for row in read_rows(path, "check the path"):
        if not row.rest:
            raise AsrBnError(f"{path}:{row.line}: word {row.key!r} has no phones (a lexicon line is `WORD PH1 PH2 …`)")
        lexicon.append((row.key, row.fields))
    if not lexicon:
        raise AsrBnError(f"{path} is empty (a lexicon needs at least one `WORD PH1 …` line)")
    return lexicon


def add_lex_disambig(lexicon: list[tuple[str, list[str]]]) -> tuple[list[tuple[str, list[str]]], int]:
    """Kaldi's add_lex_disambig.pl: append #1, #2, … to pronunciations that are homophones or prefixes of another
    pronunciation, so L can be determinized. Returns the new lexicon and the highest #n used (0: none)."""
    counts: dict[tuple[str, ...], int] = {}
    prefixes: set[tuple[str, ...]] = set()
    for _, pron in lexicon:
        counts[tuple(pron)] = counts.get(tuple(pron), 0) + 1
        prefixes.update(tuple(pron[:i]) for i in range(1, len(pron)))
    last: dict[tuple[str, ...], int] = {}
    out, top = [], 0
    for word, pron in lexicon:
        key = tuple(pron)
        if key in prefixes or counts[key] > 1:
            last[key] = last.get(key, 0) + 1
            top = max(top, last[key])
            pron = [*pron, f"#{last[key]}"]
        out.append((word, pron))
    return out, top


def write_lang(lexicon: list[tuple[str, list[str]]], out_dir: str | Path, silence_phone: str = "SIL") -> Lang:
    """Write a Kaldi-style lang folder (lexicon.txt, phones.txt, words.txt) for a position-independent lexicon.

    phones.txt: <eps>, the silence phone, the other phones sorted, then #0…#K+1 as prepare_lang.sh (#1…#K for the
    lexicon's homophones and prefixes, #K+1 after the optional silence). words.txt: <eps>, words sorted, #0, <s>, </s>.
    """
    out_dir = Path(out_dir)
    phone_set = {p for _, pron in lexicon for p in pron}
    bad = sorted(p for p in phone_set if p == EPS or p.startswith("#"))
    if bad:
        raise AsrBnError(f"lexicon phones {bad} are reserved names (<eps> and #n); rename them in the lexicon")
    words_sorted = sorted({w for w, _ in lexicon})
    bad_words = [w for w in words_sorted if w in (EPS, "#0", "<s>", "</s>")]
    if bad_words:
        raise AsrBnError(f"lexicon words {bad_words} are reserved in words.txt; drop them from the lexicon")
    phone_list = [EPS, silence_phone] + sorted(phone_set - {silence_phone})
    phone_list += [f"#{i}" for i in range(add_lex_disambig(lexicon)[1] + 2)]
    word_list = [EPS, *words_sorted, "#0", "<s>", "</s>"]
    phones = {p: i for i, p in enumerate(phone_list)}
    words = {w: i for i, w in enumerate(word_list)}
    write_text(out_dir / "lexicon.txt", "".join(f"{w} {' '.join(pron)}\n" for w, pron in lexicon))
    write_text(out_dir / "phones.txt", "".join(f"{p} {i}\n" for p, i in phones.items()))
    write_text(out_dir / "words.txt", "".join(f"{w} {i}\n" for w, i in words.items()))
    write_text(out_dir / "silence_phone.txt", silence_phone + "\n")
    return Lang(lexicon=lexicon, phones=phones, words=words, silence_phone=silence_phone)


def read_symbol_table(path: str | Path) -> dict[str, int]:
    """Read a Kaldi symbol table (`SYMBOL ID` per line) such as phones.txt or words.txt."""
    path = Path(path)
    table: dict[str, int] = {}
    for row in read_rows(path, "check the lang folder"):
        if len(row.fields) != 1 or not row.rest.lstrip("-").isdigit():
            raise AsrBnError(f"{path}:{row.line}: expected `SYMBOL ID`, got {f'{row.key} {row.rest}'.strip()!r}")
        table[row.key] = int(row.rest)
    return table


def read_lang(lang_dir: str | Path) -> Lang:
    """Read a lang folder written by `write_lang` (or Kaldi's, position-independent) and check it is consistent."""
    lang_dir = require_dir(lang_dir, "lang dir", "lexicon.txt, phones.txt, words.txt")
    lexicon_path = lang_dir / "lexicon.txt"
    if not lexicon_path.exists() and (lang_dir / "../local/dict/lexicon.txt").exists():
        lexicon_path = lang_dir / "../local/dict/lexicon.txt"  # a Kaldi data/lang beside data/local/dict
    lexicon = read_lexicon(lexicon_path)
    phones = read_symbol_table(lang_dir / "phones.txt")
    words = read_symbol_table(lang_dir / "words.txt")
    sil_file = lang_dir / "silence_phone.txt"
    if sil_file.exists():
        silence_phone = sil_file.read_text(encoding="utf-8").strip()
    else:
        optional = lang_dir / "phones" / "optional_silence.txt"  # Kaldi's layout
        silence_phone = optional.read_text(encoding="utf-8").strip() if optional.exists() else "SIL"
    for word, pron in lexicon:
        if word not in words:
            raise AsrBnError(f"{lang_dir}/words.txt lacks lexicon word {word!r}; rewrite the lang folder")
        missing = [p for p in pron if p not in phones]
        if missing:
            raise AsrBnError(f"{lang_dir}/phones.txt lacks phones {missing} of word {word!r}; rewrite the lang folder")
    if silence_phone not in phones:
        raise AsrBnError(f"{lang_dir}/phones.txt lacks the silence phone {silence_phone!r}")
    return Lang(lexicon=lexicon, phones=phones, words=words, silence_phone=silence_phone)


def lexicon_fst(lang: Lang, sil_prob: float = 0.5) -> "kaldifst.StdVectorFst":
    """The lexicon transducer L (phone ids in, word ids out) with optional silence between words.

    Same topology and costs as Kaldi's make_lexicon_fst.py --sil-prob: start → loop (no silence) or → silence
    state; each pronunciation leaves the loop state and returns to it either directly (cost -log(1-p)) or
    through one silence phone (cost -log p). Arcs are sorted by output label, ready for composition.
    """
    from asr_bn.kaldi_ext import kaldifst

    if sil_prob not in SIL_PROB:
        raise UsageError(f"--sil-prob must be {SIL_PROB}, got {sil_prob:g}")
    sil_cost, no_sil_cost = -math.log(sil_prob), -math.log(1.0 - sil_prob)
    sil = lang.phones[lang.silence_phone]
    fst = kaldifst.StdVectorFst()
    start, loop, sil_state = fst.add_state(), fst.add_state(), fst.add_state()
    fst.start = start
    fst.add_arc(start, kaldifst.StdArc(0, 0, no_sil_cost, loop))
    fst.add_arc(start, kaldifst.StdArc(0, 0, sil_cost, sil_state))
    fst.add_arc(sil_state, kaldifst.StdArc(sil, 0, 0.0, loop))
    for word, pron in lang.lexicon:
        ids = [lang.phones[p] for p in pron]
        cur = loop
        for i, phone in enumerate(ids[:-1]):
            nxt = fst.add_state()
            fst.add_arc(cur, kaldifst.StdArc(phone, lang.words[word] if i == 0 else 0, 0.0, nxt))
            cur = nxt
        out = lang.words[word] if len(ids) == 1 else 0
        fst.add_arc(cur, kaldifst.StdArc(ids[-1], out, no_sil_cost, loop))
        fst.add_arc(cur, kaldifst.StdArc(ids[-1], out, sil_cost, sil_state))
    fst.set_final(loop, 0.0)
    kaldifst.arcsort(fst, sort_type="olabel")
    return fst
