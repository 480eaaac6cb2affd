"""`asr-bn demo`: synthesize a corpus, train a baseline and a sequence-BN BLSTM, decode, and print the table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from asr_bn_cli.options import (
    DEVICE_HELP,
    THREADS_HELP,
    check_device,
    field_range,
    in_range,
    set_threads,
)

from asr_bn.config import TrainConfig
from asr_bn.ranges import Range


def demo(
    out: Annotated[Path, typer.Option("--out", help="Output dir (corpus, prepared dirs, models, graph, results); "
                                      "a rerun reuses its finished stages.")] = Path("asr-bn-demo"),
    seed: Annotated[int, typer.Option(help="Seed of the corpus, the weights and the batch order.",
                                      callback=field_range(TrainConfig, "seed"))] = 0,
    small: Annotated[bool, typer.Option("--small", help="A tiny corpus and model (about a minute; for "
                                        "tests).")] = False,
    device: Annotated[str, typer.Option(help="Where training and forward run: " + DEVICE_HELP + " cpu is "
                                        "reproducible.", callback=check_device)] = "cpu",
    threads: Annotated[Optional[int], typer.Option(help=THREADS_HELP, callback=in_range(Range(1)),
                                                   show_default="1")] = None,
) -> None:
    """The whole hybrid pipeline on an espeak-ng corpus: synth → prep → train (baseline, sequence BN) →
    forward → mkgraph → decode → score; prints train CE, dev CE, dev FER and WER (with bootstrap intervals) per
    model and what the run shows beyond noise, e.g.
    asr-bn demo --out demo"""
    from rich.console import Console
    from rich.table import Table

    from asr_bn.demo import REPLICATIONS, run_demo

    set_threads(threads)
    err = Console(stderr=True, highlight=False)
    result = run_demo(out, seed=seed, size="small" if small else "full", device=device,
                      on_stage=lambda stage: err.rule(f"[bold]{stage}"))
    b = result.budget
    table = Table(title=f"asr-bn demo (seed {result.seed}, {result.size}): {b.layers} x {b.units} BLSTM, "
                  f"{b.epochs} epochs, {b.optimizer} lr {b.lr:g}, batch {b.batch_size}",
                  caption=f"WER %: the point estimate (low, high: the 95 % interval of compute-wer-bootci's "
                  f"bootstrap over utterances, {REPLICATIONS} replications, seed {result.seed})")
    table.add_column("model", no_wrap=True)
    for name in ("train CE", "dev CE", "dev FER %", "dev WER %", "test WER %"):
        table.add_column(name, justify="right", no_wrap=True)
    for i, m in enumerate(result.models):
        dev, test = (result.wer_bootstrap[split].intervals[i] for split in ("dev", "test"))
        table.add_row(m.name, f"{m.train_ce:.3f}", f"{m.dev_ce:.3f}", f"{100 * m.dev_fer:.1f}",
                      f"{m.dev_wer:.1f} {dev.span()}", f"{m.test_wer:.1f} {test.span()}")  # fmt: skip
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 100  # a file or a pipe gets the whole table (rich's default there is 80 columns)
    console.print(table)
    for m in result.models:
        console.print(f"{m.name}: {m.test_wer_line} (test)", markup=False)
    console.print("conclusion:", markup=False)
    for line in result.conclusions():
        console.print(f"  {line}", markup=False)
    console.print(f"CPU kernels: {result.cpu_kernels}", markup=False)
    console.print(f"learning curves: {result.curves}", markup=False)
    console.print(f"results: {result.results}", markup=False)
    total = sum(result.seconds.values())
    reused = f"; reused: {', '.join(result.reused)}" if result.reused else ""
    console.print(f"time: {total:.0f} s{reused}", markup=False)


__all__ = ["demo"]
