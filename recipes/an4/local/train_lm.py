#!/usr/bin/env python3
"""An interpolated Kneser-Ney n-gram LM of the training transcripts, as an ARPA file for `asr-bn mkgraph --lm`.

    python local/train_lm.py data/train/text data/lang data/local/lm/train_3g.arpa [--order 3]

Reads  TEXT (Kaldi `utt WORD …` lines: the training transcripts only, never dev or test) and LANG/lexicon.txt
Writes OUT (ARPA): every lexicon word is in the unigrams, so the graph can still output a word the transcripts
       never used; words of TEXT missing from the lexicon are an error naming the utterance.

AN4's own etc/an4.lm is a flat unigram over 105 words (it lacks some lexicon words and has one bigram), so it
constrains little; the letters of spelled names and the digits of numbers follow each other in learnable ways.
Estimation is Chen & Goodman's interpolated Kneser-Ney with one discount per order, D = n1 / (n1 + 2 n2): the
highest order counts tokens, lower orders count distinct left contexts (n-grams starting with <s> count tokens,
nothing precedes <s>). An interpolated model is exactly an ARPA back-off model whose back-off weight of a history
h is the interpolation weight D·N1+(h·)/c(h), with the interpolated probabilities written for seen n-grams.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections import Counter, defaultdict
from pathlib import Path

from asr_bn.errors import AsrBnError
from asr_bn.io import write_text
from asr_bn.lang import read_lang

BOS, EOS = "<s>", "</s>"
Gram = tuple[str, ...]


def read_sentences(text: Path, vocab: set[str]) -> list[list[str]]:
    """The word sequences of a Kaldi text file; a word outside `vocab` is an error naming the utterance."""
    sentences = []
    for n, line in enumerate(text.read_text(encoding="utf-8").splitlines(), 1):
        utt, *words = line.split()
        unknown = sorted(set(words) - vocab)
        if unknown:
            raise AsrBnError(f"{text}:{n}: utterance {utt} has words not in the lexicon: {' '.join(unknown)} "
                             "(add them to the lexicon or drop the utterance)")
        sentences.append(words)
    return sentences


def kneser_ney(sentences: list[list[str]], vocab: list[str], order: int) -> list[dict[Gram, tuple[float, float]]]:
    """Per order n (index n-1), every seen n-gram → (log10 p, log10 back-off weight), plus all of `vocab` and
    </s> as unigrams (<s> has probability 0 and only a back-off weight)."""
    if order < 1:
        raise AsrBnError(f"--order must be >= 1, got {order}")
    counts: list[Counter[Gram]] = [Counter() for _ in range(order)]
    for words in sentences:  # token counts of the top order and of the shorter n-grams at a sentence start
        padded = [BOS, *words, EOS]
        for i in range(1, len(padded)):
            gram = tuple(padded[max(0, i - order + 1) : i + 1])
            counts[len(gram) - 1][gram] += 1
    for n in range(order - 1, 0, -1):  # the others: distinct left contexts (each seen n-gram's suffix has one)
        for gram in counts[n]:
            counts[n - 1][gram[1:]] += 1
    uni_vocab = [w for w in vocab if w not in (BOS, EOS)] + [EOS]
    probs: list[dict[Gram, float]] = [{} for _ in range(order)]
    bows: list[dict[Gram, float]] = [{} for _ in range(order)]
    for n in range(1, order + 1):
        discount = _discount(counts[n - 1])
        by_history: dict[Gram, dict[str, int]] = defaultdict(dict)
        for gram, c in counts[n - 1].items():
            by_history[gram[:-1]][gram[-1]] = c
        for history, nexts in by_history.items():
            total = sum(nexts.values())
            gamma = discount * len(nexts) / total
            for w in uni_vocab if n == 1 else nexts:
                lower = 1.0 / len(uni_vocab) if n == 1 else probs[n - 2][history[1:] + (w,)]
                probs[n - 1][history + (w,)] = max(nexts.get(w, 0) - discount, 0.0) / total + gamma * lower
            if n > 1:
                bows[n - 2][history] = gamma
    model: list[dict[Gram, tuple[float, float]]] = [
        {g: (math.log10(p), math.log10(bows[n].get(g, 1.0))) for g, p in probs[n].items()} for n in range(order)
    ]
    model[0][(BOS,)] = (-99.0, math.log10(bows[0].get((BOS,), 1.0)))
    return model


def _discount(counts: Counter[Gram]) -> float:
    """Ney's absolute discount n1 / (n1 + 2 n2) from the count-of-counts; 0.5 when it is undefined."""
    n1 = sum(1 for c in counts.values() if c == 1)
    n2 = sum(1 for c in counts.values() if c == 2)
    return n1 / (n1 + 2 * n2) if n1 and n2 else 0.5


def arpa_text(model: list[dict[Gram, tuple[float, float]]]) -> str:
    """The model as ARPA text (log10 probabilities; back-off weights only where a longer n-gram extends them)."""
    lines = ["\\data\\", *(f"ngram {n}={len(grams)}" for n, grams in enumerate(model, 1)), ""]
    for n, grams in enumerate(model, 1):
        lines.append(f"\\{n}-grams:")
        for gram in sorted(grams):
            logp, bow = grams[gram]
            field = f"\t{bow:.6f}" if n < len(model) and (bow != 0.0 or gram == (BOS,)) else ""
            lines.append(f"{logp:.6f}\t{' '.join(gram)}{field}")
        lines.append("")
    lines.append("\\end\\")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text", type=Path, help="Kaldi text of the training transcripts")
    parser.add_argument("lang", type=Path, help="lang folder (lexicon.txt, words.txt)")
    parser.add_argument("out", type=Path, help="ARPA file to write")
    parser.add_argument("--order", type=int, default=3, help="n-gram order (default 3)")
    args = parser.parse_args()
    try:
        lang = read_lang(args.lang)
        vocab = sorted(lang.pronunciations())
        sentences = read_sentences(args.text, set(vocab))
        model = kneser_ney(sentences, vocab, args.order)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text(args.out, arpa_text(model))
    except AsrBnError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        sys.exit(1)
    sizes = ", ".join(f"{len(g)} {n}-grams" for n, g in enumerate(model, 1))
    print(f"wrote {args.out}: {len(sentences)} sentences, {sizes}")


if __name__ == "__main__":
    main()
