"""`asr-bn plot RUN_DIR…`: train/dev frame CE and FER against updates for several training runs, on one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def plot(
    run_dirs: Annotated[list[Path], typer.Argument(help="Model dirs of `asr-bn train` (each with metrics.jsonl).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")] = Path("learning_curves.png"),
    labels: Annotated[Optional[str], typer.Option(help="Comma-separated legend names; default: the dir names.")] = None,
) -> None:
    """Draw the learning curves of training runs side by side (the paper's figure), e.g.
    asr-bn plot exp/blstm exp/blstm_bn_frame exp/blstm_bn_seq -o curves.png"""
    from asr_bn.errors import UsageError
    from asr_bn.train import plot_runs

    names = labels.split(",") if labels else None
    if names is not None and len(names) != len(run_dirs):
        raise UsageError(f"--labels gives {len(names)} names for {len(run_dirs)} run dirs")
    print(plot_runs(list(run_dirs), out, names))


__all__ = ["plot"]
