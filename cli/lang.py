"""`asr-bn lang DICT_DIR OUT` (Kaldi's utils/prepare_lang.sh) and `asr-bn lm TEXT OUT` (a Kneser-Ney ARPA n-gram)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from asr_bn.ranges import Range
from asr_bn_cli.options import in_range


class Flag(str, Enum):
    """A Kaldi-style boolean option value (`--position-dependent-phones false`)."""

    true = "true"
    false = "false"


def lang(
    dict_dir: Annotated[Path, typer.Argument(help="Kaldi dict dir (lexicon.txt or lexiconp.txt, nonsilence_phones.txt, "
                                             "silence_phones.txt, optional_silence.txt, extra_questions.txt), or a "
                                             "bare lexicon file (phone lists derived from it, said so).")],
    out: Annotated[Path, typer.Argument(help="Lang folder to write (replaced as a whole once complete).")],
    oov: Annotated[str, typer.Option("--oov", help="The word transcripts' out-of-lexicon words map to; added as "
                                     "`OOV SPN` when the lexicon lacks it.")] = "<UNK>",
    position_dependent_phones: Annotated[Flag, typer.Option(
        "--position-dependent-phones", help="Word-position phone variants _B _E _I _S (Kaldi's default).")] = Flag.true,
    sil_prob: Annotated[float, typer.Option("--sil-prob", callback=in_range(Range(0.0, 1.0, True, True)),
                                            help="Probability of optional silence between words in L (0 < p < 1).")] = 0.5,
) -> None:
    """A Kaldi lang folder from a dict dir, as utils/prepare_lang.sh (validate_lang.pl accepts it), e.g.
    asr-bn lang data/local/dict data/lang"""
    from asr_bn.prepare_lang import prepare_lang, read_dict_dir
    from asr_bn.report import Report

    report = Report("lang")
    prepare_lang(read_dict_dir(dict_dir, report), out, report, oov=oov,
                 position_dependent=position_dependent_phones is Flag.true, sil_prob=sil_prob)
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"wrote {out}")


def lm(
    text: Annotated[Path, typer.Argument(help="Training transcripts: a Kaldi text file (`utt WORD …`) or a data dir "
                                         "holding `text` (never dev or test).")],
    lang_dir: Annotated[Path, typer.Argument(help="Lang folder: its lexicon words are the vocabulary (all in the "
                                             "unigrams); words outside it map to its oov.txt word, counted.")],
    out: Annotated[Path, typer.Argument(help="ARPA file to write (for `asr-bn mkgraph --lm`).")],
    order: Annotated[int, typer.Option(help="n-gram order, 1-4.", callback=in_range(Range(1, 4)))] = 3,
    heldout: Annotated[Optional[Path], typer.Option(help="Held-out Kaldi text or data dir: print the perplexity "
                                                    "on it (OOV words map as in training).")] = None,
) -> None:
    """An interpolated Kneser-Ney n-gram LM of the training transcripts, written as ARPA, e.g.
    asr-bn lm data/train data/lang data/local/lm/3g.arpa --order 3 --heldout data/dev"""
    from asr_bn.io import write_text
    from asr_bn.lang import read_lang
    from asr_bn.lm import arpa_text, kneser_ney, perplexity, read_sentences
    from asr_bn.report import Report

    lang = read_lang(lang_dir)
    vocab = sorted(lang.pronunciations())
    report = Report("lm")
    model = kneser_ney(read_sentences(text, set(vocab), report, lang.oov), vocab, order)
    write_text(out, arpa_text(model))
    report.counts.update({f"{n}-grams": len(g) for n, g in enumerate(model, 1)})
    for line in report.lines():
        typer.echo(line)
    typer.echo(f"wrote {out}")
    if heldout is not None:
        held = Report("lm held-out")
        ppl, words, oovs = perplexity(model, read_sentences(heldout, set(vocab), held, lang.oov))
        for line in held.lines()[1:]:
            typer.echo(line)
        typer.echo(f"perplexity {ppl:.2f} on {heldout} ({words} words, {oovs} OOVs)")
