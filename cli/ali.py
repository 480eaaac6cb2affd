"""`asr-bn ali`: look inside Kaldi alignments without Kaldi (like hmm-info and ali-to-phones)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from asr_bn.ranges import Range
from asr_bn_cli.options import in_range

app = typer.Typer(
    help="Inspect Kaldi transition models and alignments: hmm-info, phone segments with times.",
    no_args_is_help=True,
)


@app.command("info")
def info(
    model: Annotated[Path, typer.Argument(help="Kaldi model file, e.g. exp/tri4b/final.mdl (its TransitionModel).")],
) -> None:
    """Print what Kaldi's hmm-info prints (phones, pdfs, transition-ids) and a summary of the HMM topology."""
    from asr_bn.alignments import read_transition_model

    for line in read_transition_model(model).info_lines():
        print(line)


@app.command("show")
def show(
    model: Annotated[Path, typer.Argument(help="The final.mdl the alignments were made with.")],
    ali: Annotated[Path, typer.Argument(help="Alignment dir (ali.N.gz) or one archive of transition-ids.")],
    utt: Annotated[Optional[str], typer.Argument(help="Only this utterance (default: all).")] = None,
    phones: Annotated[Optional[Path], typer.Option(help="Kaldi phones.txt, to print names instead of ids.")] = None,
    frame_shift_ms: Annotated[float, typer.Option(help="Frame shift of the alignment, in milliseconds.",
                                                  callback=in_range(Range(0, low_open=True)))] = 10.0,
) -> None:
    """Print one line `utt start end phone` (seconds) per phone instance of each utterance."""
    from asr_bn.alignments import describe_alignments

    for line in describe_alignments(model, ali, utt=utt, phones=phones, frame_shift_ms=frame_shift_ms):
        print(line)
