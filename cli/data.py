"""`asr-bn data copy SRC OUT`: a Kaldi data dir checked and copied, its transcripts normalised as told, speakers
held out as a dev set when asked."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from asr_bn.config import Range
from asr_bn_cli.options import in_range

app = typer.Typer(help="Kaldi data dirs: check and copy, normalise transcripts, hold out speakers.",
                  no_args_is_help=True)


class Case(str, Enum):
    """What to do with letter case in transcripts."""

    keep = "keep"
    upper = "upper"
    lower = "lower"


@app.command("copy")
def copy(
    src: Annotated[Path, typer.Argument(help="Kaldi data dir (wav.scp, text, utt2spk or spk2utt or neither: then "
                                        "each utterance is its own speaker).")],
    out: Annotated[Path, typer.Argument(help="Data dir to write: wav.scp (absolute paths), text, utt2spk, spk2utt, "
                                        "report.json.")],
    hold_out_speakers: Annotated[int, typer.Option("--hold-out-speakers", help="Speakers (evenly spaced in sorted "
                                                   "order) moved to --held-out, e.g. a dev set; 0: none.",
                                                   callback=in_range(Range(0)))] = 0,
    held_out: Annotated[Optional[Path], typer.Option("--held-out", help="Data dir for the held-out speakers.")] = None,
    case: Annotated[Case, typer.Option("--case", help="Transcript letter case: keep, or map every word to upper or "
                                       "lower case (changed utterances counted and named).")] = Case.keep,
    strip_punctuation: Annotated[bool, typer.Option("--strip-punctuation/--keep-punctuation", help="Remove "
                                                    "punctuation (. , ; : ! ? \" ( )) from transcripts, counted "
                                                    "per character and named.")] = False,
) -> None:
    """Check a data dir and copy it, normalising transcripts as told, e.g.
    asr-bn data copy corpus/train data/train --hold-out-speakers 6 --held-out data/dev --case upper"""
    from asr_bn.data import copy_data_dir
    from asr_bn.errors import UsageError

    if (hold_out_speakers > 0) != (held_out is not None):
        raise UsageError("--hold-out-speakers N and --held-out DIR go together")
    report = copy_data_dir(src, out, held_out, hold_out_speakers, case.value, strip_punctuation)
    for line in report.lines():
        typer.echo(line)
