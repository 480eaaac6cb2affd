"""`asr-bn forward MODEL DATA_DIR WSPECIFIER`: log-likelihoods for a Kaldi decoder (ark/scp, or ark:- on stdout)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from asr_bn.config import ForwardConfig
from asr_bn.ranges import Range
from asr_bn_cli.options import DEVICE_HELP, THREADS_HELP, check_device, field_range, in_range, set_threads

_RUN = "Run"


def forward(
    model: Annotated[str, typer.Argument(help="Model dir of `asr-bn train` (final.pt, priors.vec, pipeline.json) "
                                         "or a .pt file beside them.")],
    data_dir: Annotated[str, typer.Argument(help="Prepared dir (asr-bn prep) with the model's feature pipeline.")],
    wspecifier: Annotated[str, typer.Argument(help="ark:- (binary matrices on stdout, for a Kaldi pipe), "
                                              "ark:FILE.ark, or ark,scp:FILE.ark,FILE.scp.")],
    posteriors: Annotated[bool, typer.Option(help="Write log-posteriors log p(s|x) instead of log-likelihoods "
                                             "log p(s|x) - prior_scale * log p(s).")] = False,
    prior_scale: Annotated[float, typer.Option(help="Scale on the log-priors (Kaldi nnet-forward --prior-scale).",
                                               callback=field_range(ForwardConfig, "prior_scale"))] = 1.0,
    prior_floor: Annotated[float, typer.Option(help="Pdfs rarer than this in the training targets never win.",
                                               callback=field_range(ForwardConfig, "prior_floor"))] = 1e-10,
    max_frames: Annotated[int, typer.Option(help="Padded frames per batch (lower it when a batch runs out of memory).",
                                            callback=field_range(ForwardConfig, "max_frames"),
                                            rich_help_panel=_RUN)] = 20000,
    device: Annotated[str, typer.Option(help=DEVICE_HELP, callback=check_device, rich_help_panel=_RUN)] = "auto",
    num_workers: Annotated[int, typer.Option(help="Processes reading features.", rich_help_panel=_RUN,
                                             callback=field_range(ForwardConfig, "num_workers"))] = 0,
    threads: Annotated[Optional[int], typer.Option(help=THREADS_HELP, callback=in_range(Range(1)),
                                                   rich_help_panel=_RUN, show_default="1")] = None,
) -> None:
    """Run a trained model over a prepared dir and write Kaldi float matrices in the dir's order, e.g.
    asr-bn forward exp/blstm prep/test ark:- | latgen-faster-mapped --acoustic-scale=0.1 … final.mdl HCLG.fst ark:- …"""
    from asr_bn.forward import forward as run

    set_threads(threads)
    config = ForwardConfig(posteriors, prior_scale, prior_floor, max_frames, device=device, num_workers=num_workers)
    report = run(model, data_dir, wspecifier, config)
    for line in report.lines():
        typer.echo(line, err=True)


__all__ = ["forward"]
