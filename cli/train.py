"""`asr-bn train DATA DEV EXP_DIR`: train a (BN-)BLSTM acoustic model on prepared dirs (see asr_bn.train)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Optional

import typer

from asr_bn.train import TrainConfig

_MODEL = "Model"
_OPT = "Optimisation"
_BATCH = "Batches"
_RUN = "Run"

# The options that map one to one onto TrainConfig fields (the rest: preset, resume, nproc), and their defaults.
_FIELDS = {f for f in TrainConfig.__dataclass_fields__} - {"data", "dev", "exp_dir"}
_D = {name: f.default for name, f in TrainConfig.__dataclass_fields__.items()}


def train(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="Prepared training dir (asr-bn prep, with pdf.scp).")],
    dev: Annotated[str, typer.Argument(help="Prepared dev dir: frame CE/FER each epoch, best model, schedule.")],
    exp_dir: Annotated[str, typer.Argument(help="Output model dir (final.pt, checkpoint.pt, metrics.jsonl, …).")],
    preset: Annotated[str, typer.Option(help="default, or paper: 5x250, SGD lr 1e-4 momentum 0.9, batch 24, "
                                        "<=1300 frames, constant LR, no clipping. Options given win.")] = "default",
    resume: Annotated[bool, typer.Option(help="Continue EXP_DIR/checkpoint.pt; shapes, optimiser, batches and "
                                         "seed come from it.")] = False,
    nproc: Annotated[int, typer.Option(help="Processes (GPUs) on this machine, launched through torchrun.")] = 1,
    layers: Annotated[int, typer.Option(help="BLSTM layers.", rich_help_panel=_MODEL)] = _D["layers"],
    units: Annotated[int, typer.Option(help="Cells per direction and layer.", rich_help_panel=_MODEL)] = _D["units"],
    bn: Annotated[str, typer.Option(help="Batch norm of W·x: none, frame or sequence.",
                                    rich_help_panel=_MODEL)] = _D["bn"],
    bn_hidden: Annotated[bool, typer.Option(help="Also normalise the hidden-to-hidden product.",
                                            rich_help_panel=_MODEL)] = _D["bn_hidden"],
    dropout: Annotated[float, typer.Option(help="Dropout between layers.", rich_help_panel=_MODEL)] = _D["dropout"],
    forget_bias: Annotated[float, typer.Option(help="Initial forget-gate bias.",
                                               rich_help_panel=_MODEL)] = _D["forget_bias"],
    num_pdfs: Annotated[Optional[int], typer.Option(help="Outputs; default: the alignment model's pdf count "
                                                    "(targets_report.json) or the largest pdf-id + 1.",
                                                    rich_help_panel=_MODEL)] = None,
    optimizer: Annotated[str, typer.Option(help="sgd (with momentum) or adam.",
                                           rich_help_panel=_OPT)] = _D["optimizer"],
    lr: Annotated[float, typer.Option(help="Learning rate.", rich_help_panel=_OPT)] = _D["lr"],
    momentum: Annotated[float, typer.Option(help="SGD momentum.", rich_help_panel=_OPT)] = _D["momentum"],
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay.", rich_help_panel=_OPT)] = _D["weight_decay"],
    clip_norm: Annotated[float, typer.Option(help="Clip the gradient norm at this value; 0 = off.",
                                             rich_help_panel=_OPT)] = _D["clip_norm"],
    schedule: Annotated[str, typer.Option(help="constant; newbob (x lr-decay when dev CE stops improving); "
                                          "exponential (x lr-decay per epoch).",
                                          rich_help_panel=_OPT)] = _D["schedule"],
    lr_decay: Annotated[float, typer.Option(help="Factor of newbob / exponential decay.",
                                            rich_help_panel=_OPT)] = _D["lr_decay"],
    min_improvement: Annotated[float, typer.Option(help="Relative dev-CE gain that counts as improving.",
                                                   rich_help_panel=_OPT)] = _D["min_improvement"],
    epochs: Annotated[int, typer.Option(help="Maximum epochs.", rich_help_panel=_OPT)] = _D["epochs"],
    patience: Annotated[int, typer.Option(help="Stop after this many evaluations without improvement; 0 = never.",
                                          rich_help_panel=_OPT)] = _D["patience"],
    batch_size: Annotated[int, typer.Option(help="Utterances per (global) batch.",
                                            rich_help_panel=_BATCH)] = _D["batch_size"],
    max_frames: Annotated[int, typer.Option(help="Instead of --batch-size: padded frames B x T_max per (global) "
                                            "batch; 0 = unused.", rich_help_panel=_BATCH)] = 0,
    max_train_frames: Annotated[int, typer.Option(help="Drop longer training utterances (named in report.json); "
                                                  "0 = keep all.", rich_help_panel=_BATCH)] = _D["max_train_frames"],
    drop_last: Annotated[bool, typer.Option(help="Drop each epoch's last batch when it has fewer than "
                                            "--batch-size utterances.", rich_help_panel=_BATCH)] = _D["drop_last"],
    eval_every: Annotated[int, typer.Option(help="Also evaluate on dev every N updates; 0 = per epoch only.",
                                            rich_help_panel=_RUN)] = _D["eval_every"],
    population_batches: Annotated[int, typer.Option(help="BN statistics for dev scores and final.pt: population "
                                                    "statistics over N training batches, re-estimated before each "
                                                    "evaluation (the paper's alternative); 0 = running averages.",
                                                    rich_help_panel=_MODEL)] = _D["population_batches"],
    log_every: Annotated[int, typer.Option(help="Updates per metrics line.", rich_help_panel=_RUN)] = _D["log_every"],
    checkpoint_every: Annotated[int, typer.Option(help="Updates per checkpoint.pt (also at each epoch end).",
                                                  rich_help_panel=_RUN)] = _D["checkpoint_every"],
    device: Annotated[str, typer.Option(help="auto (cuda if available), cpu, cuda, cuda:N.",
                                        rich_help_panel=_RUN)] = _D["device"],
    amp: Annotated[str, typer.Option(help="Mixed precision: none, bf16, fp16 (CUDA).",
                                     rich_help_panel=_RUN)] = _D["amp"],
    num_workers: Annotated[int, typer.Option(help="DataLoader processes reading features.",
                                             rich_help_panel=_RUN)] = _D["num_workers"],
    cache: Annotated[bool, typer.Option(help="Hold all features in RAM (small corpora).",
                                        rich_help_panel=_RUN)] = _D["cache"],
    seed: Annotated[int, typer.Option(help="Seed of weights, dropout and batch order.",
                                      rich_help_panel=_RUN)] = _D["seed"],
    tensorboard: Annotated[bool, typer.Option(help="Also log to EXP_DIR/tensorboard (needs tensorboard).",
                                              rich_help_panel=_RUN)] = _D["tensorboard"],
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
    for name in ("max_frames", "max_train_frames"):
        if given.get(name) == 0:
            given[name] = None
    if given.get("max_frames") is None:
        given.pop("max_frames", None)
    from asr_bn.train import is_finished
    from asr_bn.train import train as run_training

    cfg = TrainConfig.from_options(preset, data=data, dev=dev, exp_dir=exp_dir, **given)
    state = run_training(cfg, resume=resume)
    if not is_finished(cfg, state):
        raise typer.Exit(143)  # stopped by SIGTERM/SIGINT: checkpoint saved, the run is not complete


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


__all__ = ["train"]
