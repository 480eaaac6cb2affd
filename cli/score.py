"""`asr-bn score wer REF HYP…` (Kaldi's compute-wer / score.sh) and `asr-bn score frames MODEL DATA` (CE, FER)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from asr_bn.config import SCORE_MODES, ForwardConfig
from asr_bn.ranges import Range
from asr_bn_cli.options import DEVICE_HELP, THREADS_HELP, check_device, field_range, in_range, set_threads

app = typer.Typer(help="Score hypotheses (WER, SER) or a model's frames (cross-entropy, frame error rate).",
                  no_args_is_help=True)


@app.command("wer")
def wer(
    ref: Annotated[Path, typer.Argument(help="Reference: a Kaldi text file, or a data dir holding `text` (its "
                                        "utt2spk then gives the per-speaker table).")],
    hyps: Annotated[list[Path], typer.Argument(help="Hypothesis text files, or decode dirs (their hyp_LMWT files, "
                                               "else their `text`). With several, each is scored and the best shown.")],
    ignore: Annotated[str, typer.Option(help="Comma-separated non-scored words, removed from both sides, e.g. "
                                        "'<NOISE>,<SIL>,<SPOKEN_NOISE>'.", show_default="none")] = "",
    mode: Annotated[Literal[SCORE_MODES], typer.Option(
        help="all: a missing hypothesis counts as empty; present: score only utterances with one; strict: a missing "
        "one is an error.")] = "all",
    utt2spk: Annotated[Optional[Path], typer.Option(help="utt2spk for the per-speaker table (default: REF's, when "
                                                    "REF is a data dir).")] = None,
    details: Annotated[Optional[Path], typer.Option(help="Write per_utt and per_spk (Kaldi's wer_details) of the "
                                                    "best hypotheses into this dir.")] = None,
    bootstrap: Annotated[bool, typer.Option("--bootstrap", help="Also Kaldi's compute-wer-bootci: the 95 % interval "
                                            "of each WER and the probability that HYP2 beats HYP1, by resampling "
                                            "utterances (give one or two HYP: files, or decode dirs for their best "
                                            "file).")] = False,
    replications: Annotated[int, typer.Option(help="Bootstrap replications (compute-wer-bootci's --replications).",
                                              callback=in_range(Range(1)))] = 10000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap draws: the same lines on every machine.",
                                      callback=in_range(Range(0)))] = 0,
) -> None:
    """Word and sentence error rates in Kaldi's format, e.g.
    asr-bn score wer data/test exp/blstm/decode --ignore '<SIL>'
    asr-bn score wer data/test exp/blstm/decode_test/text exp/blstm_bn/decode_test/text --bootstrap"""
    from asr_bn.errors import UsageError
    from asr_bn.io import check_output_dir
    from asr_bn.report import Report
    from asr_bn.score import best_of, bootstrap_wer, score_hyps, write_details

    if bootstrap and len(hyps) not in (1, 2):
        raise UsageError(f"--bootstrap compares one or two systems; got {len(hyps)} HYP arguments")
    if details is not None:
        check_output_dir(details, "--details")
    words = [w for w in ignore.split(",") if w]
    scored = [score_hyps(ref, [h], words, mode) for h in hyps] if bootstrap else [score_hyps(ref, hyps, words, mode)]
    results = [r for system, _ in scored for r in system]
    best = best_of([b for _, b in scored])
    if len(results) == 1:
        lines = best.lines()
    else:  # a sweep (several files, or a decode dir's hyp_LMWT): one %WER line each, then the best's summary
        lines = [result.lines()[0] for result in results] + [f"best: {best.lines()[0]}", *best.lines()[1:]]
    for line in lines:
        typer.echo(line)
    if bootstrap:
        systems = [b for _, b in scored]
        boot = bootstrap_wer([s.per_utt() for s in systems], replications, seed)
        names = ", ".join(f"Set{i} = {s.hyp_path}" for i, s in enumerate(systems, 1))
        typer.echo(f"bootstrap over {boot.utterances} utterances, {replications} replications, seed {seed}: {names}")
        for line in boot.lines():
            typer.echo(line)
    if details is not None:
        report = Report("score")
        for path in write_details(best, details, utt2spk or (ref if ref.is_dir() else None), report):
            typer.echo(f"wrote {path}", err=True)
        for note in report.notes:
            typer.echo(f"note: {note}", err=True)


@app.command("frames")
def frames(
    model: Annotated[str, typer.Argument(help="Model dir of `asr-bn train` (final.pt) or a .pt file.")],
    data_dir: Annotated[str, typer.Argument(help="Prepared dir with alignments (pdf.scp from asr-bn prep --ali-dir).")],
    max_frames: Annotated[int, typer.Option(help="Padded frames per batch.",
                                            callback=field_range(ForwardConfig, "max_frames"))] = 20000,
    device: Annotated[str, typer.Option(help=DEVICE_HELP, callback=check_device)] = "auto",
    threads: Annotated[Optional[int], typer.Option(help=THREADS_HELP, callback=in_range(Range(1)),
                                                   show_default="1")] = None,
) -> None:
    """Frame cross-entropy and frame error rate against the alignments (masked, over all frames), e.g.
    asr-bn score frames exp/blstm_bn prep/test_dev93"""
    from asr_bn.forward import score_frames

    set_threads(threads)
    scores = score_frames(model, data_dir, ForwardConfig(max_frames=max_frames, device=device))
    typer.echo(f"frame CE {scores.ce:.4f} nats, FER {100 * scores.fer:.2f} % over {scores.frames} frames")


__all__ = ["app", "frames", "wer"]
