"""`asr-bn prep kaldi|wsj`: a Kaldi data dir (or a Kaldi WSJ s5 tree) → features, CMVN stats and a report."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional

import typer

from asr_bn.config import FbankConfig
from asr_bn.ranges import Range
from asr_bn_cli.options import in_range

app = typer.Typer(
    help="Compute features of Kaldi data dirs (fbank, CMVN stats) into prepared dirs for training and decoding.",
    no_args_is_help=True,
)

_FBANK_PANEL = "Fbank options (Kaldi's compute-fbank-feats; given ones override --config)"
_FBANK_FIELDS = dataclasses.fields(FbankConfig)  # each knows its Kaldi option name and help text


class Cmvn(str, Enum):
    """CMVN statistics: per speaker (spk2utt), per utterance, one global set, or none."""

    speaker = "speaker"
    utterance = "utterance"
    global_ = "global"
    none = "none"


class Device(str, Enum):
    """Where fbank runs."""

    cpu = "cpu"
    cuda = "cuda"


def _with_fbank_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command one option per FbankConfig field (Kaldi's name, e.g. --num-mel-bins); the command receives
    the options the user actually gave as `fbank_overrides` (a dict), so they can override --config."""
    extra = []
    for field in _FBANK_FIELDS:
        name, default = field.metadata["kaldi"], field.default
        flag = f"--{name}/--no-{name}" if isinstance(default, bool) else f"--{name}"
        valid, choices = field.metadata.get("range"), field.metadata.get("choices")
        option = typer.Option(flag, help=field.metadata["help"], rich_help_panel=_FBANK_PANEL,
                              callback=None if valid is None else in_range(valid))
        kind = type(default) if choices is None else Literal[choices]
        annotation = Annotated[kind, option]  # type: ignore[misc,valid-type]
        extra.append(
            inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        )
    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "fbank_overrides"]
    ctx = inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context)

    @functools.wraps(command)
    def wrapper(ctx: typer.Context, **kwargs: Any) -> Any:
        overrides = {}
        for field in _FBANK_FIELDS:
            value = kwargs.pop(field.name)
            source = ctx.get_parameter_source(field.name)  # click's ParameterSource (typer vendors click)
            if source is not None and source.name == "COMMANDLINE":
                overrides[field.name] = value
        return command(**kwargs, fbank_overrides=overrides)

    params = [*own, ctx, *extra]
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def _pipeline(
    config: Optional[Path], overrides: dict[str, Any], cmvn: Cmvn, norm_vars: bool, preset: dict[str, Any]
):  # noqa: ANN202
    """The FeaturePipeline: explicit fbank options over the --config file, or over the command's preset."""
    from asr_bn.features import FeaturePipeline

    if config is not None:
        fbank = FbankConfig.from_kaldi_conf(config, **overrides)
    else:
        fbank = FbankConfig.from_dict({**preset, **overrides})
    return FeaturePipeline(fbank, cmvn=cmvn.value, norm_vars=norm_vars)  # type: ignore[arg-type]


ConfigOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--config", help="Kaldi fbank conf file (`--num-mel-bins=40` per line), as compute-fbank-feats --config."
    ),
]
CmvnOpt = Annotated[
    Cmvn, typer.Option("--cmvn", help="CMVN statistics to compute: per speaker, per utterance, global, or none.")
]
NormVarsOpt = Annotated[
    bool, typer.Option("--norm-vars", help="Normalize variances too when applying CMVN (means always).")
]
CompressOpt = Annotated[
    bool,
    typer.Option(
        "--compress", help="Store feats.ark with Kaldi's lossy compression (kSpeechFeature), about 4x smaller."
    ),
]
NjOpt = Annotated[int, typer.Option("--nj", min=1, help="Threads loading audio (files and pipes).")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    "--threads", callback=in_range(Range(1)), show_default="the CPU cores",
    help="Fbank on the CPU: groups of utterances computed at once, each op on one torch thread (bench/features.py).",
)]
DeviceOpt = Annotated[Device, typer.Option("--device", help="Device for fbank.")]
SkipBadOpt = Annotated[
    bool,
    typer.Option(
        "--skip-bad",
        help="Skip utterances with missing, corrupt or failing audio, or audio at another sample rate (named in the "
        "report) instead of stopping.",
    ),
]
ChannelOpt = Annotated[
    Optional[int],
    typer.Option(
        "--channel",
        min=0,
        help="Channel of multi-channel audio to use (0 = left); multi-channel audio without it is an error.",
    ),
]
Sph2pipeOpt = Annotated[
    Optional[Path], typer.Option("--sph2pipe", help="Path of sph2pipe, replacing the one named in wav.scp's pipes.")
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Redo an output that is already complete.")]
LengthToleranceOpt = Annotated[int, typer.Option(
    "--length-tolerance", min=0,
    help="Alignments off by at most N frames from the features are trimmed or padded (repeating the last label); "
    "further off, the utterance is dropped and named.",
)]

PdfIdsOpt = Annotated[bool, typer.Option(
    "--pdf-ids",
    help="The alignments hold pdf-ids already (ali-to-pdf output, or `utt label label ...` text of another aligner), "
    "not transition-ids; bounded by --num-pdfs, else by the model when there is one.",
)]
NumPdfsOpt = Annotated[Optional[int], typer.Option(
    "--num-pdfs", min=1,
    help="With --pdf-ids: the pdf count; a pdf-id outside 0..N-1 is an error naming the file and the utterance.",
)]


def _fbank_threads(threads: Optional[int]) -> int:
    """Fbank's parallel groups (`threads`, by default torch's default thread count: the CPU cores); torch's own
    threads are set to 1 once, so that each group's ops run on one."""
    import torch

    groups = threads or torch.get_num_threads()
    torch.set_num_threads(1)
    return groups


def _print(result: Any) -> None:  # result: asr_bn.prep.PrepResult
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if result.already_done:
        console.print(f"{result.out_dir}: already done (same inputs and options; --force redoes it)")
    else:
        for line in result.report.lines():
            console.print(line, markup=False)
        console.print(f"wrote {result.out_dir}", markup=False)
    for line in result.targets.lines() if result.targets is not None else []:
        console.print(line, markup=False)


@app.command("kaldi")
@_with_fbank_options
def kaldi(
    data_dir: Annotated[
        Path, typer.Argument(help="Kaldi data dir: wav.scp, utt2spk or spk2utt; optional segments, text, utt2dur.")
    ],
    out_dir: Annotated[
        Path,
        typer.Argument(
            help="Output dir: feats.{ark,scp}, cmvn.{ark,scp}, utt2num_frames, data files, pipeline.json, report.json."
        ),
    ],
    config: ConfigOpt = None,
    cmvn: CmvnOpt = Cmvn.speaker,
    norm_vars: NormVarsOpt = False,
    compress: CompressOpt = False,
    nj: NjOpt = 1,
    threads: ThreadsOpt = None,
    device: DeviceOpt = Device.cpu,
    skip_bad: SkipBadOpt = False,
    channel: ChannelOpt = None,
    sph2pipe: Sph2pipeOpt = None,
    force: ForceOpt = False,
    ali_dir: Annotated[Optional[Path], typer.Option(
        "--ali-dir", help="Kaldi alignment dir (ali.N.gz + final.mdl, e.g. exp/tri4b_ali_si284) or one "
        "archive: writes pdf.ark/.scp."
    )] = None,
    length_tolerance: LengthToleranceOpt = 0,
    pdf_ids: PdfIdsOpt = False,
    num_pdfs: NumPdfsOpt = None,
    model: Annotated[Optional[Path], typer.Option(
        "--model", help="Kaldi model of the alignments (default: ALI_DIR/final.mdl); with --pdf-ids it bounds them.",
    )] = None,
    fbank_overrides: dict[str, Any] | None = None,
) -> None:
    """Compute raw fbank + CMVN stats of one Kaldi data dir (e.g. asr-bn prep kaldi data/train prep/train --nj 4)."""
    from asr_bn.prep import prepare_kaldi

    pipeline = _pipeline(config, fbank_overrides or {}, cmvn, norm_vars, {})
    _print(
        prepare_kaldi(
            data_dir,
            out_dir,
            pipeline,
            compress=compress,
            nj=nj,
            threads=_fbank_threads(threads),
            device=device.value,
            skip_bad=skip_bad,
            channel=channel,
            sph2pipe=None if sph2pipe is None else str(sph2pipe),
            force=force,
            ali_dir=ali_dir,
            length_tolerance=length_tolerance,
            pdf_ids=pdf_ids,
            model=model,
            num_pdfs=num_pdfs,
        )
    )


@app.command("wsj")
@_with_fbank_options
def wsj(
    s5_dir: Annotated[
        Path, typer.Argument(help="Kaldi egs/wsj/s5 directory after its data prep (holds data/train_si284, …).")
    ],
    out_dir: Annotated[Path, typer.Argument(help="Output dir: one prepared dir per set, OUT_DIR/<set>.")],
    sets: Annotated[
        str, typer.Option("--sets", help="Comma-separated data sets under s5/data.")
    ] = "train_si284,test_dev93,test_eval92",
    config: ConfigOpt = None,
    cmvn: CmvnOpt = Cmvn.speaker,
    norm_vars: NormVarsOpt = False,
    compress: CompressOpt = False,
    nj: NjOpt = 1,
    threads: ThreadsOpt = None,
    device: DeviceOpt = Device.cpu,
    skip_bad: SkipBadOpt = False,
    channel: ChannelOpt = None,
    sph2pipe: Sph2pipeOpt = None,
    force: ForceOpt = False,
    ali_dir: Annotated[Optional[list[str]], typer.Option(
        "--ali-dir", help="SET=DIR: Kaldi alignment dir joined to a set (repeatable). Default: s5/exp/tri4b_ali_si284 "
        "for train_si284 and s5/exp/tri4b_ali_dev93 for test_dev93, when present.",
    )] = None,
    length_tolerance: LengthToleranceOpt = 0,
    pdf_ids: PdfIdsOpt = False,
    num_pdfs: NumPdfsOpt = None,
    fbank_overrides: dict[str, Any] | None = None,
) -> None:
    """The paper's WSJ features (40 fbank, 16 kHz, speaker CMVN) for each set of a Kaldi WSJ tree
    (e.g. asr-bn prep wsj ~/kaldi/egs/wsj/s5 prep/wsj --nj 8)."""
    from asr_bn.errors import UsageError
    from asr_bn.prep import prepare_wsj

    pipeline = _pipeline(
        config, fbank_overrides or {}, cmvn, norm_vars, {"sample_frequency": 16000.0, "num_mel_bins": 40}
    )
    for item in ali_dir or []:
        if "=" not in item:
            raise UsageError(f"--ali-dir takes SET=DIR (e.g. train_si284=exp/tri4b_ali_si284), not {item!r}")
    prepare_wsj(
        s5_dir,
        out_dir,
        pipeline,
        sets=[s.strip() for s in sets.split(",") if s.strip()],
        on_set=lambda name, result: _print(result),
        ali_dirs=None if not ali_dir else dict(item.split("=", 1) for item in ali_dir),
        length_tolerance=length_tolerance,
        pdf_ids=pdf_ids,
        num_pdfs=num_pdfs,
        compress=compress,
        nj=nj,
        threads=_fbank_threads(threads),
        device=device.value,
        skip_bad=skip_bad,
        channel=channel,
        sph2pipe=None if sph2pipe is None else str(sph2pipe),
        force=force,
    )


@app.command("post")
def post(
    data_dir: Annotated[Path, typer.Argument(help="Prepared dir (asr-bn prep) to give soft targets: writes "
                                             "post.ark/.scp into it.")],
    logposts: Annotated[list[Path], typer.Argument(help="One .scp of log-posteriors per network, each from "
                                                   "`asr-bn forward MODEL DIR ark,scp:X.ark,X.scp --posteriors` over "
                                                   "the same utterances.")],
    min_post: Annotated[float, typer.Option(help="Drop posteriors below this (Kaldi prob-to-post --min-post "
                                            "--random-prune=false: the rest is not renormalised).",
                                            callback=in_range(Range(0, 1, low_open=True)))] = 0.01,
) -> None:
    """Soft targets for distillation: the mean posteriors of one or more networks (an ensemble) over DATA_DIR's
    utterances, as a Kaldi posterior archive, for asr-bn train --soft-weight
    (e.g. asr-bn prep post prep/train exp/blstm_s0/post_train.scp exp/blstm_s1/post_train.scp)."""
    from asr_bn.alignments.posteriors import join_posteriors

    for line in join_posteriors(data_dir, logposts, min_post).lines():
        typer.echo(line)
