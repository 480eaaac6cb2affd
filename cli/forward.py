"""`asr-bn forward MODEL DATA_DIR WSPECIFIER`: log-likelihoods for a Kaldi decoder (ark/scp, or ark:- on stdout)."""

from __future__ import annotations

from typing import Annotated

import typer

_RUN = "Run"


def forward(
    model: Annotated[str, typer.Argument(help="Model dir of `asr-bn train` (final.pt, priors.vec, pipeline.json) "
                                         "or a .pt file beside them.")],
    data_dir: Annotated[str, typer.Argument(help="Prepared dir (asr-bn prep) with the model's feature pipeline.")],
    wspecifier: Annotated[str, typer.Argument(help="ark:- (binary matrices on stdout, for a Kaldi pipe), "
                                              "ark:FILE.ark, or ark,scp:FILE.ark,FILE.scp.")],
    posteriors: Annotated[bool, typer.Option(help="Write log-posteriors log p(s|x) instead of log-likelihoods "
                                             "log p(s|x) - prior_scale * log p(s).")] = False,
    prior_scale: Annotated[float, typer.Option(help="Scale on the log-priors (Kaldi nnet-forward --prior-scale).")] = 1.0,
    prior_floor: Annotated[float, typer.Option(help="Pdfs rarer than this in the training targets never win.")] = 1e-10,
    max_frames: Annotated[int, typer.Option(help="Padded frames per batch (lower it when a batch runs out of memory).",
                                            rich_help_panel=_RUN)] = 20000,
    device: Annotated[str, typer.Option(help="auto (cuda when available), cpu, cuda, cuda:N.",
                                        rich_help_panel=_RUN)] = "auto",
    num_workers: Annotated[int, typer.Option(help="Processes reading features.", rich_help_panel=_RUN)] = 0,
) -> None:
    """Run a trained model over a prepared dir and write Kaldi float matrices in the dir's order, e.g.
    asr-bn forward exp/blstm prep/test ark:- | latgen-faster-mapped --acoustic-scale=0.1 … final.mdl HCLG.fst ark:- …"""
    from asr_bn.forward import ForwardConfig
    from asr_bn.forward import forward as run

    config = ForwardConfig(posteriors, prior_scale, prior_floor, max_frames, device=device, num_workers=num_workers)
    report = run(model, data_dir, wspecifier, config)
    for line in report.lines():
        typer.echo(line, err=True)


__all__ = ["forward"]
