"""Word times of a one-best path as a Kaldi `ctm`, word boundaries from the lexicon.

What Kaldi gets with `lattice-1best | lattice-align-words-lexicon | nbest-to-ctm`: the path's transition-ids are
split into phones (`TransitionModel.phone_segments`, Kaldi's SplitToPhones), the phones are matched against the
path's words through the lexicon (optional silence between words belongs to no word), and each word's span is its
phones' frames. The lexicon comes from a lang folder (`asr_bn.lang.read_lang`) or from Kaldi's
`phones/align_lexicon.int` of a graph dir (utils/mkgraph.sh copies it there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from asr_bn.errors import AsrBnError

__all__ = ["WordLexicon", "load_word_lexicon", "word_segments", "ctm_lines"]


@dataclass(frozen=True)
class WordLexicon:
    """Each word's pronunciations as phone-id tuples, and the phones that may stand between words (silence)."""

    prons: dict[str, frozenset[tuple[int, ...]]]
    silence: frozenset[int]


def _from_lang(lang_dir: Path) -> WordLexicon:
    from asr_bn.lang import read_lang

    lang = read_lang(lang_dir)
    prons: dict[str, set[tuple[int, ...]]] = {}
    for word, pron in lang.lexicon:
        prons.setdefault(word, set()).add(tuple(lang.phones[p] for p in pron))
    return WordLexicon({w: frozenset(p) for w, p in prons.items()}, frozenset({lang.phones[lang.silence_phone]}))


def _from_align_lexicon(path: Path, words: dict[int, str]) -> WordLexicon:
    """Kaldi's align_lexicon.int: `WORD-ID WORD-ID PHONE-IDS…` per line; word 0 (<eps>) is the optional silence."""
    prons: dict[str, set[tuple[int, ...]]] = {}
    silence: set[int] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 3 or not all(f.isdigit() for f in fields) or fields[0] != fields[1]:
            raise AsrBnError(f"{path}:{n}: expected `WORD-ID WORD-ID PHONE-ID…`, got {line!r} (Kaldi's layout)")
        word, phones = int(fields[0]), tuple(int(f) for f in fields[2:])
        if word == 0:
            silence.update(phones)
        elif word not in words:
            raise AsrBnError(f"{path}:{n}: word id {word} is not in the graph's words.txt (a lexicon of another lang)")
        else:
            prons.setdefault(words[word], set()).add(phones)
    return WordLexicon({w: frozenset(p) for w, p in prons.items()}, frozenset(silence))


def load_word_lexicon(graph_dir: str | Path, words: dict[int, str], lang: str | Path | None = None) -> WordLexicon:
    """The lexicon for word boundaries: `lang`'s (a lang folder) if given, else the graph dir's
    phones/align_lexicon.int (Kaldi's graph dirs have it); `words` is the graph's id → word table."""
    if lang is not None:
        return _from_lang(Path(lang))
    path = Path(graph_dir) / "phones" / "align_lexicon.int"
    if not path.is_file():
        raise AsrBnError(
            f"{path}: no such file; word times need the lexicon: give the lang folder the graph was built from "
            "(--lang, e.g. data/lang)"
        )
    return _from_align_lexicon(path, words)


def word_segments(
    phones: Sequence[tuple[int, int, int]], words: Sequence[str], lexicon: WordLexicon
) -> list[tuple[str, int, int]] | None:
    """Split phone instances (phone, first frame, end frame) into `words` by the lexicon, silence phones allowed
    between words: (word, first frame, end frame) per word, or None when the phones cannot spell the words."""
    n, m = len(words), len(phones)
    seq = tuple(p for p, _, _ in phones)
    back: dict[tuple[int, int], tuple[int, int] | None] = {(0, 0): None}  # (words, phones) done → previous
    todo = [(0, 0)]
    while todo:  # depth-first; every state is entered once, so the search is at most words × phones steps
        i, j = todo.pop()
        nexts = []
        if j < m and seq[j] in lexicon.silence:
            nexts.append((i, j + 1))
        if i < n:
            nexts.extend((i + 1, j + len(p)) for p in lexicon.prons.get(words[i], ()) if seq[j : j + len(p)] == p)
        for state in nexts:
            if state not in back:
                back[state] = (i, j)
                todo.append(state)
    if (n, m) not in back:
        return None
    out: list[tuple[str, int, int]] = []
    state = (n, m)
    while (prev := back[state]) is not None:
        if prev[0] != state[0]:  # a word, not a silence phone
            out.append((words[prev[0]], phones[prev[1]][1], phones[state[1] - 1][2]))
        state = prev
    return out[::-1]


def ctm_lines(utt: str, segments: Sequence[tuple[str, int, int]], frame_shift: float) -> str:
    """Kaldi ctm lines `utt 1 start duration word` (seconds, channel 1 as nbest-to-ctm writes)."""
    return "".join(
        f"{utt} 1 {start * frame_shift:.3f} {(end - start) * frame_shift:.3f} {word}\n" for word, start, end in segments
    )
