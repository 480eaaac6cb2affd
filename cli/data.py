"""`asr-bn data copy SRC OUT`: a Kaldi data dir checked and copied, its transcripts normalised as told, speakers
held out as a dev set when asked; `asr-bn data perturb-speed SRC OUT`: Kaldi's 3-way speed perturbation."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from asr_bn.ranges import Range
from asr_bn_cli.options import in_range

app = typer.Typer(help="Kaldi data dirs: check and copy, normalise transcripts, hold out speakers; speed perturbation.",
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


@app.command("perturb-speed")
def perturb_speed(
    src: Annotated[Path, typer.Argument(help="Kaldi data dir (as `asr-bn data copy` writes it).")],
    out: Annotated[Path, typer.Argument(help="Data dir to write: every utterance once per factor (sp<f>- ids), the "
                                        "new audio as 16-bit WAV under OUT/wav, report.json.")],
    factors: Annotated[str, typer.Option("--factors", help="Comma-separated speed factors; 1.0 keeps the "
                                         "originals (Kaldi's perturb_data_dir_speed_3way.sh: 0.9,1.0,1.1).")]
    = "0.9,1.0,1.1",
    sample_frequency: Annotated[int, typer.Option("--sample-frequency", help="The audio's sample rate in Hz "
                                                  "(other rates are an error, or skipped with --skip-bad).",
                                                  callback=in_range(Range(1)))] = 16000,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="Leave out recordings whose audio cannot be read "
                                           "(named in report.json) instead of stopping.")] = False,
) -> None:
    """Speed-perturb a data dir as Kaldi's utils/data/perturb_data_dir_speed_3way.sh (audio resampled in Python,
    no sox), e.g. asr-bn data perturb-speed data/train data/train_sp --factors 0.9,1.0,1.1"""
    from asr_bn.perturb import perturb_speed as run, speed_factors

    report = run(src, out, speed_factors(factors), sample_frequency, skip_bad)
    for line in report.lines():
        typer.echo(line)
