"""`asr-bn decode GRAPH MODEL LOGLIKES OUT_DIR` (Kaldi HCLG + kaldi-decoder) and `asr-bn mkgraph LANG MODEL OUT`."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from asr_bn.config import SIL_PROB, DecodeConfig
from asr_bn.ranges import Range
from asr_bn_cli.options import field_range, in_range

_D = "Decoder (Kaldi's steps/nnet/decode.sh defaults)"


def lmwt_range(text: Optional[str]) -> tuple[int, ...]:
    from asr_bn.errors import UsageError

    if not text:
        return ()
    low, _, high = text.partition(":")
    try:
        first, last = int(low), int(high or low)
    except ValueError:
        raise UsageError(f"--lmwt {text!r}: give a range of integer LM weights like 7:17 (or one weight)") from None
    if first > last:
        raise UsageError(f"--lmwt {text!r}: the first weight is larger than the last")
    return tuple(range(first, last + 1))


def decode(
    graph_dir: Annotated[str, typer.Argument(help="Graph dir with HCLG.fst and words.txt (Kaldi's mkgraph.sh or "
                                             "asr-bn mkgraph).")],
    model: Annotated[str, typer.Argument(help="The alignment model final.mdl the network's targets came from (or its "
                                         "exp dir): transition-id → pdf-id.")],
    loglikes: Annotated[str, typer.Argument(help="Log-likelihoods from asr-bn forward: ark:-, ark:FILE, scp:FILE, "
                                            "or a .ark/.scp path.")],
    out_dir: Annotated[str, typer.Argument(help="Output dir: text (hypotheses), report.json; with "
                                           "--lattices lat.ark/.scp and hyp_LMWT; with --ctm ctm.")],
    acoustic_scale: Annotated[float, typer.Option(help="Scale on the acoustic log-likelihoods.", rich_help_panel=_D,
                                                  callback=field_range(DecodeConfig, "acoustic_scale"))] = 0.1,
    beam: Annotated[float, typer.Option(help="Decoding beam.", rich_help_panel=_D,
                                        callback=field_range(DecodeConfig, "beam"))] = 13.0,
    max_active: Annotated[int, typer.Option(help="Most active states per frame (one-best decoder).", rich_help_panel=_D,
                                            callback=field_range(DecodeConfig, "max_active"))] = 7000,
    lattice_beam: Annotated[float, typer.Option(help="Lattice pruning beam (with --lattices).", rich_help_panel=_D,
                                                callback=field_range(DecodeConfig, "lattice_beam"))] = 8.0,
    lattices: Annotated[bool, typer.Option(help="Decode with lattices and write lat.ark/lat.scp (state-level, "
                                           "readable by Kaldi's lattice tools); slower: no --max-active.")] = False,
    lmwt: Annotated[Optional[str], typer.Option(help="With --lattices: also write hyp_LMWT for each LM weight of "
                                                "this range, e.g. 7:17 (score.sh's sweep).")] = None,
    ctm: Annotated[bool, typer.Option(help="Also write `ctm`: word times of the one-best path (Kaldi's "
                                      "utt channel start duration word), word boundaries from the lexicon.")] = False,
    lang: Annotated[Optional[str], typer.Option(help="With --ctm: the lang folder the graph was built from "
                                                "(default: the graph dir's phones/align_lexicon.int).")] = None,
    frame_shift: Annotated[float, typer.Option(help="With --ctm: seconds per frame (the features' frame shift).",
                                               callback=field_range(DecodeConfig, "frame_shift"))] = 0.01,
    nj: Annotated[int, typer.Option(help="Parallel decoding processes.", callback=in_range(Range(1)))] = 1,
    average_with: Annotated[Optional[list[str]], typer.Option(
        "--average-with", help="Another network's log-likelihoods of the same utterances (repeatable): decode the "
        "frame-by-frame mean of LOGLIKES and these, an ensemble (Kaldi's matrix-sum --average=true).")] = None,
) -> None:
    """Decode log-likelihoods with a Kaldi graph, without Kaldi binaries, into Kaldi `text` hypotheses.

    e.g. asr-bn forward exp/blstm data/test ark:- | asr-bn decode exp/tri4b/graph_tgpr exp/tri4b_ali ark:- exp/blstm/decode
    """
    from asr_bn.decode import decode as run
    from asr_bn.errors import UsageError

    if lang is not None and not ctm:
        raise UsageError("--lang is only read for word times: add --ctm")
    config = DecodeConfig(
        acoustic_scale, beam, max_active, lattice_beam, lattices, lmwt_range(lmwt), ctm, frame_shift
    )
    report = run(graph_dir, model, loglikes, out_dir, config, nj, lang, average_with or ())
    for line in report.lines():
        typer.echo(line, err=True)


def mkgraph(
    lang: Annotated[str, typer.Argument(help="Lang folder: lexicon.txt (or Kaldi's ../local/dict/lexicon.txt), "
                                       "phones.txt, words.txt.")],
    model: Annotated[str, typer.Argument(help="The alignment model final.mdl (or its exp dir, with its tree).")],
    out_dir: Annotated[str, typer.Argument(help="Graph dir to write: HCLG.fst, words.txt, phones.txt, num_pdfs.")],
    lm: Annotated[Optional[str], typer.Option(help="ARPA language model; default: a uniform loop over the lexicon's "
                                              "words.")] = None,
    tree: Annotated[Optional[str], typer.Option(help="Decision tree; default: `tree` beside final.mdl, else "
                                                "monophone.")] = None,
    sil_prob: Annotated[float, typer.Option(help="Probability of optional silence between words.",
                                            callback=in_range(SIL_PROB))] = 0.5,
    self_loop_scale: Annotated[float, typer.Option(help="Scale on HMM self-loop probabilities.",
                                                   callback=in_range(Range(0)))] = 0.1,
    transition_scale: Annotated[float, typer.Option(help="Scale on the other HMM transition probabilities.",
                                                    callback=in_range(Range(0)))] = 1.0,
) -> None:
    """Build a decoding graph HCLG for a word loop or an ARPA LM over a lexicon (Kaldi's utils/mkgraph.sh).

    e.g. asr-bn mkgraph data/lang exp/mono exp/mono/graph --lm data/local/lm.arpa
    """
    from asr_bn.mkgraph import build_graph

    out = build_graph(lang, model, out_dir, lm or "loop", tree, sil_prob, transition_scale, self_loop_scale)
    typer.echo(f"wrote {out}/HCLG.fst")


__all__ = ["decode", "mkgraph"]
