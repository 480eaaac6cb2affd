"""Torch CPU threads for the BLSTM commands: torch's default thread count against one thread, side by side.

    python bench/threads.py                 # the demo's 2 x 128 and the default 5 x 250 models
    python bench/threads.py --rounds 5

For each model size, alternates the thread counts (so that machine load hits both alike) over `rounds` rounds of:
forward = inference on one batch (what `asr-bn forward` / `score frames` do per batch), train = one update
(forward, backward, Adam step; what `asr-bn train` does per batch). Prints the median seconds per thread count and
the ratio default / 1 thread: above 1, one thread is faster (the commands' default `--threads 1`).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from asr_bn.config import ModelConfig
from asr_bn.model import BnBlstm

SIZES = {"demo 2 x 128": (2, 128), "default 5 x 250": (5, 250)}
BATCH, FRAMES, INPUT, PDFS = 16, 100, 120, 500


def _forward(model: BnBlstm, x: torch.Tensor, lengths: torch.Tensor) -> None:
    model.eval()
    with torch.no_grad():
        model(x, lengths)


def _train_step(model: BnBlstm, opt: torch.optim.Optimizer, x: torch.Tensor, lengths: torch.Tensor) -> None:
    model.train()
    loss = model(x, lengths).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    default = torch.get_num_threads()
    counts = sorted({default, 1}, reverse=True)
    print(f"torch {torch.__version__}, default {default} threads; batch {BATCH} x {FRAMES} frames, {INPUT} inputs, "
          f"{PDFS} pdfs; median of {args.rounds} rounds")  # fmt: skip
    print(f"{'model':18s} {'step':8s} " + " ".join(f"{f'{n} thr (s)':>10s}" for n in counts) + "  default/1")
    x = torch.randn(BATCH, FRAMES, INPUT)
    lengths = torch.full((BATCH,), FRAMES)
    for name, (layers, units) in SIZES.items():
        torch.manual_seed(0)
        model = BnBlstm(ModelConfig(input_dim=INPUT, num_pdfs=PDFS, layers=layers, units=units))
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        steps = {"forward": lambda: _forward(model, x, lengths), "train": lambda: _train_step(model, opt, x, lengths)}
        for step_name, step in steps.items():
            times: dict[int, list[float]] = {n: [] for n in counts}
            for _ in range(args.rounds):
                for n in counts:
                    torch.set_num_threads(n)
                    t0 = time.perf_counter()
                    step()
                    times[n].append(time.perf_counter() - t0)
            medians = [statistics.median(times[n]) for n in counts]
            ratio = medians[0] / medians[-1]
            print(f"{name:18s} {step_name:8s} " + " ".join(f"{m:10.2f}" for m in medians) + f"  {ratio:8.2f}x")
    torch.set_num_threads(default)


if __name__ == "__main__":
    main()
