"""Pronunciation lexicons and Kaldi `data/lang` folders: lexicon.txt, phones.txt, words.txt, and the lexicon FST L.

`asr_bn.prepare_lang` writes a complete Kaldi lang folder from a dict dir (utils/prepare_lang.sh, position-dependent
phones); `write_lang` a minimal position-independent one. The HMM-GMM aligner and graph builders read either (or
Kaldi's own) with `read_lang` and build L with `lexicon_fst` (optional silence between words, as Kaldi's
make_lexicon_fst.py).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from asr_bn.config import SIL_PROB
from asr_bn.errors import AsrBnError, UsageError
from asr_bn.io import read_rows, require_dir, write_text
from asr_bn.report import Report

if TYPE_CHECKING:
    from asr_bn.kaldi_ext import kaldifst

__all__ = ["Lang", "read_lexicon", "read_lexiconp", "add_lex_disambig", "write_lang", "read_lang", "lexicon_fst",
           "lexicon_disambig_fst", "read_symbol_table", "note_oovs"]

EPS = "<eps>"


@dataclass
class Lang:
    """A lexicon with its symbol tables: phone and word ids as in Kaldi's phones.txt / words.txt.

    `lexicon` holds (word, phones) pairs in file order; a word with alternative pronunciations appears once per
    pronunciation. `silence_phone` is the optional silence inserted between words. A Kaldi lang folder also gives
    every silence phone (phones/silence.txt, position variants included), the phone sets that share a monophone's
    pdfs (phones/sets.txt: a phone's _B _E _I _S variants), pronunciation probabilities and the OOV word; an empty
    field means the position-independent default (one silence phone, one set per phone, probabilities 1, no OOV).
    """

    lexicon: list[tuple[str, list[str]]]
    phones: dict[str, int]
    words: dict[str, int]
    silence_phone: str = "SIL"
    silence_phones: list[str] = field(default_factory=list)
    phone_sets: list[list[str]] = field(default_factory=list)
    pron_probs: list[float] = field(default_factory=list)
    oov: str | None = None
    extra_questions: list[list[str]] = field(default_factory=list)  # phones/extra_questions.txt of a Kaldi folder

    @property
    def disambig_phone_ids(self) -> list[int]:
        """Ids of the disambiguation symbols #0, #1, … in phones.txt."""
        return [i for p, i in self.phones.items() if p.startswith("#")]

    @property
    def real_phone_ids(self) -> list[int]:
        """Ids of the phones that get an HMM (all but <eps> and the #n symbols), sorted."""
        return sorted(i for p, i in self.phones.items() if p != EPS and not p.startswith("#"))

    @property
    def silence_phone_ids(self) -> list[int]:
        """Ids of every silence phone (the optional silence alone for a position-independent folder), sorted."""
        return sorted(self.phones[p] for p in self.silence_phones or [self.silence_phone])

    @property
    def shared_phone_sets(self) -> list[list[int]]:
        """Phone-id sets that share one monophone's pdfs (Kaldi's phones/sets.int; one set per phone by default)."""
        if self.phone_sets:
            return [sorted(self.phones[p] for p in s) for s in self.phone_sets]
        return [[p] for p in self.real_phone_ids]

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


def note_oovs(report: Report, oov: str | None, unknown: Counter[str]) -> None:
    """Count, and name with their counts, the transcript words outside the lexicon that were mapped to `oov`."""
    if unknown:
        report.counts[f"words mapped to {oov}"] = sum(unknown.values())
        report.note(f"words outside the lexicon, mapped to {oov} (count): "
                    + ", ".join(f"{w} ({c})" for w, c in sorted(unknown.items(), key=lambda x: (-x[1], x[0]))))


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


def read_lexiconp(path: str | Path) -> tuple[list[tuple[str, list[str]]], list[float]]:
    """Read a Kaldi lexiconp.txt (`WORD PROB PH1 PH2 …`, 0 < PROB <= 1) into (word, phones) pairs and probabilities."""
    path = Path(path)
    lexicon: list[tuple[str, list[str]]] = []
    probs: list[float] = []
    for row in read_rows(path, "check the path"):
        fields = [row.key, *row.fields]
        try:
            prob = float(fields[1]) if len(fields) > 2 else math.nan
        except ValueError:
            prob = math.nan
        if not 0.0 < prob <= 1.0:
            raise AsrBnError(f"{path}:{row.line}: expected `WORD PROB PH1 …` with 0 < PROB <= 1, got "
                             f"{' '.join(fields)!r}")
        lexicon.append((fields[0], fields[2:]))
        probs.append(prob)
    if not lexicon:
        raise AsrBnError(f"{path} is empty (a lexicon needs at least one `WORD PROB PH1 …` line)")
    return lexicon, probs


def _lines(path: Path) -> list[list[str]]:
    """The fields of each non-blank line of an optional lang file (phones/sets.txt …); [] when it is absent."""
    return [[row.key, *row.fields] for row in read_rows(path, "check the lang folder")] if path.exists() else []


def read_lang(lang_dir: str | Path) -> Lang:
    """Read a lang folder and check it is consistent: asr-bn's (`prepare_lang`: lexiconp.txt; `write_lang`:
    lexicon.txt) or Kaldi's (the lexicon of phones/align_lexicon.txt, else data/local/dict/lexicon.txt beside it)."""
    lang_dir = require_dir(lang_dir, "lang dir", "phones.txt, words.txt and a lexicon")
    probs: list[float] = []
    if (lang_dir / "lexiconp.txt").exists():
        lexicon, probs = read_lexiconp(lang_dir / "lexiconp.txt")
    elif not (lang_dir / "lexicon.txt").exists() and (lang_dir / "phones" / "align_lexicon.txt").exists():
        lexicon = [(f[0], f[2:]) for f in _lines(lang_dir / "phones" / "align_lexicon.txt") if f[0] != EPS]
    elif not (lang_dir / "lexicon.txt").exists() and (lang_dir / "../local/dict/lexicon.txt").exists():
        lexicon = read_lexicon(lang_dir / "../local/dict/lexicon.txt")  # a Kaldi data/lang beside data/local/dict
    else:
        lexicon = read_lexicon(lang_dir / "lexicon.txt")
    phones = read_symbol_table(lang_dir / "phones.txt")
    words = read_symbol_table(lang_dir / "words.txt")
    sil_file = lang_dir / "silence_phone.txt"
    if not sil_file.exists():
        sil_file = lang_dir / "phones" / "optional_silence.txt"  # Kaldi's layout
    silence_phone = sil_file.read_text(encoding="utf-8").strip() if sil_file.exists() else "SIL"
    silence_phones = [f[0] for f in _lines(lang_dir / "phones" / "silence.txt")]
    phone_sets = _lines(lang_dir / "phones" / "sets.txt")
    extra_questions = _lines(lang_dir / "phones" / "extra_questions.txt")
    oov = (lang_dir / "oov.txt").read_text(encoding="utf-8").strip() if (lang_dir / "oov.txt").exists() else None
    for word, pron in lexicon:
        if word not in words:
            raise AsrBnError(f"{lang_dir}/words.txt lacks lexicon word {word!r}; rewrite the lang folder")
        missing = [p for p in pron if p not in phones]
        if missing:
            raise AsrBnError(f"{lang_dir}/phones.txt lacks phones {missing} of word {word!r}; rewrite the lang folder")
    for p in [silence_phone, *silence_phones, *(p for s in phone_sets + extra_questions for p in s)]:
        if p not in phones:
            raise AsrBnError(f"{lang_dir}/phones.txt lacks the phone {p!r} of phones/; rewrite the lang folder")
    if oov is not None and oov not in words:
        raise AsrBnError(f"{lang_dir}/oov.txt names {oov!r}, which words.txt lacks; rewrite the lang folder")
    return Lang(lexicon=lexicon, phones=phones, words=words, silence_phone=silence_phone,
                silence_phones=silence_phones, phone_sets=phone_sets, pron_probs=probs, oov=oov,
                extra_questions=extra_questions)


def lexicon_fst(lang: Lang, sil_prob: float = 0.5, sil_disambig: int | None = None) -> "kaldifst.StdVectorFst":
    """The lexicon transducer L (phone ids in, word ids out) with optional silence between words.

    Kaldi's make_lexicon_fst.py --sil-prob, state for state: start → loop (no silence) or → silence state; each
    pronunciation leaves the loop state (cost -log of its probability) and returns to it either directly (cost
    -log(1-p)) or through one silence phone (cost -log p), followed by `sil_disambig` when given (L_disambig).
    Arcs are sorted by output label, ready for composition.
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
    if sil_disambig is None:
        fst.add_arc(sil_state, kaldifst.StdArc(sil, 0, 0.0, loop))
    else:
        between = fst.add_state()
        fst.add_arc(sil_state, kaldifst.StdArc(sil, 0, 0.0, between))
        fst.add_arc(between, kaldifst.StdArc(sil_disambig, 0, 0.0, loop))
    probs = lang.pron_probs or [1.0] * len(lang.lexicon)
    for (word, pron), prob in zip(lang.lexicon, probs):
        ids = [lang.phones[p] for p in pron]
        pron_cost = -math.log(prob)
        cur = loop
        for i, phone in enumerate(ids[:-1]):
            nxt = fst.add_state()
            first = i == 0
            fst.add_arc(cur, kaldifst.StdArc(phone, lang.words[word] if first else 0, pron_cost if first else 0.0, nxt))
            cur = nxt
        out, cost = (lang.words[word], pron_cost) if len(ids) == 1 else (0, 0.0)
        fst.add_arc(cur, kaldifst.StdArc(ids[-1], out, no_sil_cost + cost, loop))
        fst.add_arc(cur, kaldifst.StdArc(ids[-1], out, sil_cost + cost, sil_state))
    fst.set_final(loop, 0.0)
    kaldifst.arcsort(fst, sort_type="olabel")
    return fst


def lexicon_disambig_fst(lang: Lang, sil_prob: float = 0.5) -> tuple["kaldifst.StdVectorFst", dict[str, int], dict[str, int]]:
    """L_disambig as Kaldi's prepare_lang.sh makes it: lexicon #n symbols, a silence disambiguation symbol after
    the optional silence, and #0:#0 self-loops where words leave (fstaddselfloops, for G's back-off arcs).
    Returns L (olabel-sorted) and the phone and word tables including the disambiguation symbols."""
    from asr_bn.kaldi_ext import kaldifst

    lexicon, top = add_lex_disambig(lang.lexicon)
    phones = dict(lang.phones)
    for n in range(top + 2):  # #0 (G back-off), #1..#top (lexicon), #top+1 (silence)
        phones.setdefault(f"#{n}", max(phones.values()) + 1)
    words = dict(lang.words)
    for w in ("#0", "<s>", "</s>"):
        words.setdefault(w, max(words.values()) + 1)
    disambig = Lang(lexicon, phones, words, lang.silence_phone, pron_probs=lang.pron_probs)
    L = lexicon_fst(disambig, sil_prob, sil_disambig=phones[f"#{top + 1}"])
    for s in range(L.num_states):  # fstaddselfloops: #0:#0 on every final state and every state with a word output
        if L.final(s).value != float("inf") or any(a.olabel != 0 for a in kaldifst.ArcIterator(L, s)):
            L.add_arc(s, kaldifst.StdArc(phones["#0"], words["#0"], 0.0, s))
    kaldifst.arcsort(L, sort_type="olabel")
    return L, phones, words
