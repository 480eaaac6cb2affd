"""`asr-bn train DATA DEV EXP_DIR`: train a (BN-)BLSTM acoustic model on prepared dirs (see asr_bn.train)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Literal, Optional

import typer

from asr_bn.config import AMP_MODES, BN_MODES, CRITERIA, OPTIMIZERS, PRESETS, RESUMABLE, SCHEDULES, TrainConfig
from asr_bn.ranges import Range
from asr_bn_cli.options import DEVICE_HELP, THREADS_HELP, check_device, field_range, in_range, set_threads

_MODEL = "Model"
_OPT = "Optimisation"
_BATCH = "Batches"
_SEQ = "Start and objective"
_RUN = "Run"

# The options that map one to one onto TrainConfig fields (the rest: preset, resume, nproc, threads), their defaults
# and range checks.
_FIELDS = {f for f in TrainConfig.__dataclass_fields__} - {"data", "dev", "exp_dir"}
_D = {name: f.default for name, f in TrainConfig.__dataclass_fields__.items()}


def _opt(name: str, help: str, panel: str) -> typer.models.OptionInfo:
    """The option of TrainConfig's field `name`, with the field's range checked where it is parsed."""
    ranged = TrainConfig.__dataclass_fields__[name].metadata.get("range") is not None
    return typer.Option(help=help, rich_help_panel=panel, callback=field_range(TrainConfig, name) if ranged else None)


def train(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="Prepared training dir (asr-bn prep, with pdf.scp).")],
    dev: Annotated[str, typer.Argument(help="Prepared dev dir: frame CE/FER each epoch, best model, schedule.")],
    exp_dir: Annotated[str, typer.Argument(help="Output model dir (final.pt, checkpoint.pt, metrics.jsonl, …).")],
    preset: Annotated[Literal[tuple(PRESETS)], typer.Option(
        help="paper: 5x250, SGD lr 1e-4 momentum 0.9, batch 24, <=1300 frames, constant LR, no clipping. Options "
        "given win.")] = "default",
    resume: Annotated[bool, typer.Option(
        help="Continue EXP_DIR/checkpoint.pt with its options. Options given that may change (--"
        + ", --".join(k.replace("_", "-") for k in RESUMABLE) + ") apply and are noted; others are refused.")] = False,
    nproc: Annotated[int, typer.Option(help="Processes (GPUs) on this machine, launched through torchrun.",
                                       callback=in_range(Range(1)))] = 1,
    layers: Annotated[int, _opt("layers", "BLSTM layers.", _MODEL)] = _D["layers"],
    units: Annotated[int, _opt("units", "Cells per direction and layer.", _MODEL)] = _D["units"],
    bn: Annotated[Literal[BN_MODES], _opt("bn", "Batch norm of W·x.", _MODEL)] = _D["bn"],
    bn_hidden: Annotated[bool, _opt("bn_hidden", "Also normalise the hidden-to-hidden product.",
                                    _MODEL)] = _D["bn_hidden"],
    dropout: Annotated[float, _opt("dropout", "Dropout between layers.", _MODEL)] = _D["dropout"],
    forget_bias: Annotated[float, _opt("forget_bias", "Initial forget-gate bias.", _MODEL)] = _D["forget_bias"],
    num_pdfs: Annotated[Optional[int], _opt("num_pdfs", "Outputs; default: the alignment model's pdf count "
                                            "(targets_report.json) or the largest pdf-id + 1.", _MODEL)] = None,
    population_batches: Annotated[int, _opt(
        "population_batches", "BN statistics for dev scores and final.pt: population statistics over N training "
        "batches, re-estimated before each evaluation (the paper's alternative); 0 = running averages.",
        _MODEL)] = _D["population_batches"],
    init: Annotated[Optional[str], _opt("init", "Start from this trained model (dir or final.pt): its shape, weights "
                                        "and features; the model options are unused.", _SEQ)] = None,
    criterion: Annotated[Literal[CRITERIA], _opt("criterion", "ce: frame cross-entropy; mmi: sequence training "
                                                 "(Kaldi nnet1's MMI) from --init over --denlats, every epoch run, "
                                                 "the last model final.pt.", _SEQ)] = _D["criterion"],
    denlats: Annotated[Optional[str], _opt("denlats", "MMI: lat.scp of DATA decoded with --init's model (asr-bn "
                                           "forward, then asr-bn decode --lattices, e.g. on a unigram graph).",
                                           _SEQ)] = None,
    lattice_model: Annotated[Optional[str], _opt("lattice_model", "MMI: the final.mdl of DATA's alignments and "
                                                 "the lattices' graph.", _SEQ)] = None,
    acwt: Annotated[float, _opt("acwt", "MMI: acoustic scale of the lattice posteriors.", _SEQ)] = _D["acwt"],
    drop_frames: Annotated[bool, _opt("drop_frames", "MMI: no gradient on frames whose reference pdf is not in "
                                      "the lattice.", _SEQ)] = _D["drop_frames"],
    optimizer: Annotated[Literal[OPTIMIZERS], _opt("optimizer", "SGD (with --momentum) or Adam.",
                                                   _OPT)] = _D["optimizer"],
    lr: Annotated[float, _opt("lr", "Learning rate.", _OPT)] = _D["lr"],
    momentum: Annotated[float, _opt("momentum", "SGD momentum.", _OPT)] = _D["momentum"],
    weight_decay: Annotated[float, _opt("weight_decay", "L2 weight decay.", _OPT)] = _D["weight_decay"],
    clip_norm: Annotated[float, _opt("clip_norm", "Clip the gradient norm at this value; 0 = off.",
                                     _OPT)] = _D["clip_norm"],
    schedule: Annotated[Literal[SCHEDULES], _opt("schedule", "constant; newbob (x lr-decay when dev CE stops "
                                                 "improving); exponential (x lr-decay per epoch).",
                                                 _OPT)] = _D["schedule"],
    lr_decay: Annotated[float, _opt("lr_decay", "Factor of newbob / exponential decay.", _OPT)] = _D["lr_decay"],
    min_improvement: Annotated[float, _opt("min_improvement", "Relative dev-CE gain that counts as improving.",
                                           _OPT)] = _D["min_improvement"],
    epochs: Annotated[int, _opt("epochs", "Maximum epochs.", _OPT)] = _D["epochs"],
    patience: Annotated[int, _opt("patience", "Stop after this many evaluations without improvement; 0 = never.",
                                  _OPT)] = _D["patience"],
    batch_size: Annotated[int, _opt("batch_size", "Utterances per (global) batch.", _BATCH)] = _D["batch_size"],
    max_frames: Annotated[int, _opt("max_frames", "Instead of --batch-size: padded frames B x T_max per (global) "
                                    "batch; 0 = unused.", _BATCH)] = 0,
    max_train_frames: Annotated[int, _opt("max_train_frames", "Drop longer training utterances (named in "
                                          "report.json); 0 = keep all.", _BATCH)] = _D["max_train_frames"],
    soft_weight: Annotated[float, _opt("soft_weight", "Train toward DATA's soft targets (post.scp, asr-bn prep "
                                       "post: e.g. an ensemble's posteriors) with this weight, the alignments' "
                                       "with 1 minus it; 0 = alignments only.", _BATCH)] = _D["soft_weight"],
    drop_last: Annotated[bool, _opt("drop_last", "Drop each epoch's last batch when it has fewer than --batch-size "
                                    "utterances.", _BATCH)] = _D["drop_last"],
    num_frame_masks: Annotated[int, _opt("num_frame_masks", "SpecAugment: runs of frames masked per training "
                                         "utterance (masked values: the utterance's mean).", _BATCH)] = _D["num_frame_masks"],
    frames_mask_size: Annotated[int, _opt("frames_mask_size", "SpecAugment: most frames in one frame mask.",
                                          _BATCH)] = _D["frames_mask_size"],
    num_feature_masks: Annotated[int, _opt("num_feature_masks", "SpecAugment: runs of feature dimensions masked per "
                                           "training utterance.", _BATCH)] = _D["num_feature_masks"],
    features_mask_size: Annotated[int, _opt("features_mask_size", "SpecAugment: most dimensions in one feature "
                                            "mask.", _BATCH)] = _D["features_mask_size"],
    eval_every: Annotated[int, _opt("eval_every", "Also evaluate on dev every N updates; 0 = per epoch only.",
                                    _RUN)] = _D["eval_every"],
    log_every: Annotated[int, _opt("log_every", "Updates per metrics line.", _RUN)] = _D["log_every"],
    checkpoint_every: Annotated[int, _opt("checkpoint_every", "Updates per checkpoint.pt (also at each epoch end).",
                                          _RUN)] = _D["checkpoint_every"],
    keep_models: Annotated[bool, _opt("keep_models", "Also keep each dev evaluation's model as "
                                      "EXP_DIR/models/update-N.pt, for asr-bn average.", _RUN)] = _D["keep_models"],
    device: Annotated[str, typer.Option(help=DEVICE_HELP, callback=check_device, rich_help_panel=_RUN)] = _D["device"],
    amp: Annotated[Literal[AMP_MODES], _opt("amp", "Mixed precision (fp16: CUDA only).", _RUN)] = _D["amp"],
    num_workers: Annotated[int, _opt("num_workers", "DataLoader processes reading features.",
                                     _RUN)] = _D["num_workers"],
    cache: Annotated[bool, _opt("cache", "Hold all features in RAM (small corpora).", _RUN)] = _D["cache"],
    seed: Annotated[int, _opt("seed", "Seed of weights, dropout and batch order.", _RUN)] = _D["seed"],
    tensorboard: Annotated[bool, _opt("tensorboard", "Also log to EXP_DIR/tensorboard (needs tensorboard).",
                                      _RUN)] = _D["tensorboard"],
    threads: Annotated[Optional[int], typer.Option(help=THREADS_HELP, callback=in_range(Range(1)),
                                                   rich_help_panel=_RUN, show_default="1")] = None,
) -> None:
    """Train a BLSTM acoustic model with frame cross-entropy; keep the best model by dev CE as EXP_DIR/final.pt.

    e.g. asr-bn train data/train_si284_prep data/test_dev93_prep exp/blstm_bn --preset paper --bn sequence
    """
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        from asr_bn.train import launch

        argv = _without_nproc(sys.argv[1:])
        raise typer.Exit(launch(nproc, argv))
    given = {
        name: value
        for name, value in ctx.params.items()
        if name in _FIELDS and ctx.get_parameter_source(name).name not in ("DEFAULT", "DEFAULT_MAP")
    }
    if ctx.get_parameter_source("preset").name not in ("DEFAULT", "DEFAULT_MAP"):
        given = {**PRESETS[preset], **given}
    if given.get("max_frames") == 0:  # 0 = unused: --batch-size stays in effect
        del given["max_frames"]
    set_threads(threads)
    from asr_bn.train import is_finished
    from asr_bn.train import train as run_training

    cfg = TrainConfig.from_options(preset, data=data, dev=dev, exp_dir=exp_dir, **given)
    cfg, state = run_training(cfg, resume=resume, given={"data", "dev", "exp_dir", *given})
    if not is_finished(cfg, state):
        raise typer.Exit(143)  # stopped by SIGTERM/SIGINT: checkpoint saved, the run is not complete


def average(
    exp_dir: Annotated[str, typer.Argument(help="Model dir of an `asr-bn train --keep-models` run.")],
    out_dir: Annotated[str, typer.Argument(help="Output model dir: final.pt (the mean), pipeline.json, priors.vec, "
                                           "config.json, report.json.")],
    last: Annotated[int, typer.Option(help="Average this many kept models, the last of them the best (final.pt's).",
                                      callback=in_range(Range(1)))] = 5,
) -> None:
    """Checkpoint averaging: the mean of the last models a run kept up to its best, as a model dir for forward.

    e.g. asr-bn average exp/blstm_bn exp/blstm_bn_avg5 --last 5 && asr-bn score frames exp/blstm_bn_avg5 prep/dev
    """
    from asr_bn.train.average import average_models

    report = average_models(exp_dir, out_dir, last)
    for line in report.lines():
        typer.echo(line, err=True)


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line minus `--nproc N` / `--nproc=N` (the processes torchrun starts must not launch again)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


__all__ = ["train", "average"]
