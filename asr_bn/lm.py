"""Interpolated Kneser-Ney n-gram language models (order 1-4) as ARPA files, for `asr-bn mkgraph --lm`; perplexity.

    >>> model = kneser_ney(read_sentences("data/train/text", vocab, report), vocab, order=3)
    >>> write_text("data/local/lm/3g.arpa", arpa_text(model)); perplexity(model, heldout)

Sentences come from a Kaldi text (`utt WORD …`) or a data dir's `text`: the training transcripts only, never dev or
test. Every vocabulary word (a lang's lexicon words) is in the unigrams, so the graph can still output a word the
transcripts never used; a transcript word outside the vocabulary maps to the lang's OOV word (counted and named per
word in the report), or is an error naming the utterance when there is none.

Estimation is Chen & Goodman's interpolated Kneser-Ney with one discount per order, D = n1 / (n1 + 2 n2): the
highest order counts tokens, lower orders count distinct left contexts (n-grams starting with <s> count tokens,
nothing precedes <s>). An interpolated model is exactly an ARPA back-off model whose back-off weight of a history
h is the interpolation weight D·N1+(h·)/c(h), with the interpolated probabilities written for seen n-grams.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

from asr_bn.errors import AsrBnError
from asr_bn.io import file_in
from asr_bn.lang import note_oovs
from asr_bn.report import Report

BOS, EOS = "<s>", "</s>"
Gram = tuple[str, ...]


def read_sentences(source: str | Path, vocab: set[str], report: Report, oov: str | None = None) -> list[list[str]]:
    """The word sequences of a Kaldi text file (or a data dir's text). A word outside `vocab` becomes `oov` (counted
    per word in `report`); without an `oov` it is an error naming the utterance."""
    text = file_in(source, "text", "text file", "give a Kaldi text file or a data dir holding `text`")
    sentences = []
    unknown: Counter[str] = Counter()
    for n, line in enumerate(text.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        utt, *words = line.split()
        missing = sorted(set(words) - vocab)
        if missing and oov is None:
            raise AsrBnError(f"{text}:{n}: utterance {utt} has words not in the lexicon: {' '.join(missing)} "
                             "(add them to the lexicon, drop the utterance, or give a lang with an OOV word)")
        unknown.update(w for w in words if w not in vocab)
        sentences.append([w if w in vocab else str(oov) for w in words])
    note_oovs(report, oov, unknown)
    report.counts["sentences"] = len(sentences)
    return sentences


def kneser_ney(sentences: list[list[str]], vocab: list[str], order: int) -> list[dict[Gram, tuple[float, float]]]:
    """Per order n (index n-1), every seen n-gram → (log10 p, log10 back-off weight), plus all of `vocab` and
    </s> as unigrams (<s> has probability 0 and only a back-off weight)."""
    if not 1 <= order <= 4:
        raise AsrBnError(f"--order must be 1, 2, 3 or 4, got {order}")
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


def prob(model: list[dict[Gram, tuple[float, float]]], word: str, history: tuple[str, ...]) -> float:
    """log10 p(word | history) by ARPA back-off (the history cut to the model's order)."""
    history = history[len(history) - len(model) + 1:] if len(model) > 1 else ()
    total = 0.0
    while True:
        gram = history + (word,)
        if gram in model[len(gram) - 1]:
            return total + model[len(gram) - 1][gram][0]
        if not history:
            raise AsrBnError(f"internal: {word!r} is not in the model's unigrams")
        total += model[len(history) - 1].get(history, (0.0, 0.0))[1]
        history = history[1:]


def perplexity(model: list[dict[Gram, tuple[float, float]]], sentences: list[list[str]]) -> tuple[float, int, int]:
    """(perplexity, words scored, OOV words skipped) over `sentences` with each </s> scored (and counted in the
    perplexity, not in the words), as SRILM's `ngram -ppl`: words outside the model's unigrams are counted, not
    scored."""
    logprob, scored, oovs = 0.0, 0, 0
    for words in sentences:
        history: tuple[str, ...] = (BOS,)
        for w in [*words, EOS]:
            if (w,) in model[0]:
                logprob += prob(model, w, history)
                scored += 1
            else:  # kept in the history: no n-gram holds it, so the next word backs off past it (weight 1)
                oovs += 1
            history = history + (w,)
    if not scored:
        raise AsrBnError("the held-out text has no word the model knows; nothing to score")
    return 10 ** (-logprob / scored), scored - len(sentences), oovs
