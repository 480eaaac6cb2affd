"""Toy check of the paper's claim: BN on W·x reaches the baseline's final training loss in fewer steps.

A synthetic sequence-labelling task: each sequence is a Markov chain of segments (3–10 frames) of K classes; a frame's
features are its class's mean plus noise, distorted by a global badly conditioned affine map (feature scales
0.1–10, offsets) and a per-sequence gain and offset; a frame's label is (current class + previous segment's class)
mod K, so the model must remember across segments. BLSTMs with bn = none / sequence / frame start from the same
initial weights and see the same batches (SGD with momentum). Printed: the smoothed training loss (moving average of
the per-frame cross-entropy over 25 steps) along the way, and the first step at which each BN model's smoothed loss
reaches the baseline's final smoothed loss. Reported, not asserted.

    python bench/bn_convergence.py                  # 400 steps, lr 0.05, momentum 0.9 (about a minute per mode)
    python bench/bn_convergence.py --lr 0.02 --steps 600
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from asr_bn.config import ModelConfig
from asr_bn.model import BnBlstm

DIM, CLASSES, BATCH = 16, 6, 24


def make_batches(count: int, seed: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """``count`` batches of (x (B, T, D), lengths (B,), labels (B, T), -1 at padding) of the toy task."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(CLASSES, DIM, generator=g) * 1.5
    scales = 10.0 ** (torch.rand(DIM, generator=g) * 2 - 1)  # 0.1 … 10
    offsets = torch.randn(DIM, generator=g) * 5
    batches = []
    for _ in range(count):
        lengths = torch.randint(20, 81, (BATCH,), generator=g)
        t_max = int(lengths.max())
        x = torch.zeros(BATCH, t_max, DIM)
        y = torch.full((BATCH, t_max), -1, dtype=torch.long)
        for b, n in enumerate(lengths.tolist()):
            cls, prev, t = int(torch.randint(CLASSES, (1,), generator=g)), 0, 0
            gain, shift = 0.5 + 2.5 * float(torch.rand(1, generator=g)), torch.randn(DIM, generator=g)
            while t < n:
                seg = min(int(torch.randint(3, 11, (1,), generator=g)), n - t)
                feats = means[cls] + 0.8 * torch.randn(seg, DIM, generator=g)
                x[b, t : t + seg] = (gain * feats + shift) * scales + offsets
                y[b, t : t + seg] = (cls + prev) % CLASSES
                prev, cls = cls, int(torch.randint(CLASSES, (1,), generator=g))
                t += seg
        batches.append((x, lengths, y))
    return batches


def train(bn: str, batches: list, steps: int, lr: float, momentum: float, seed: int) -> list[float]:
    """Per-step training losses (mean per-frame cross-entropy) of a 2 × 32 BLSTM with BN mode ``bn``."""
    torch.manual_seed(seed)
    model = BnBlstm(ModelConfig(DIM, CLASSES, layers=2, units=32, bn=bn))  # type: ignore[arg-type]
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    losses = []
    for step in range(steps):
        x, lengths, y = batches[step % len(batches)]
        logp = model(x, lengths)
        loss = F.nll_loss(logp.reshape(-1, CLASSES), y.reshape(-1), ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        losses.append(loss.item())
    return losses


def smooth(losses: list[float], width: int = 25) -> list[float]:
    """Trailing moving average."""
    return [statistics.fmean(losses[max(0, i + 1 - width) : i + 1]) for i in range(len(losses))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", nargs="+", default=["none", "sequence", "frame"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    batches = make_batches(100, args.seed)
    curves = {}
    for bn in args.modes:
        t0 = time.perf_counter()
        curves[bn] = smooth(train(bn, batches, args.steps, args.lr, args.momentum, args.seed))
        print(f"bn={bn:<8s} trained {args.steps} steps in {time.perf_counter() - t0:5.1f} s")
    marks = sorted({min(args.steps, m) for m in (25, 50, 100, 200, 300, 400, 600, 800, args.steps)})
    print(f"\nsmoothed training loss (SGD lr {args.lr}, momentum {args.momentum}, seed {args.seed})")
    print("step     " + "".join(f"{bn:>10s}" for bn in curves))
    for m in marks:
        print(f"{m:<9d}" + "".join(f"{c[m - 1]:10.3f}" for c in curves.values()))
    if "none" in curves:
        target = curves["none"][-1]
        print(f"\nbaseline (bn=none) final smoothed loss {target:.3f} after {args.steps} steps")
        for bn, c in curves.items():
            if bn == "none":
                continue
            hit = next((i + 1 for i, v in enumerate(c) if v <= target), None)
            where = f"step {hit} ({hit / args.steps:.0%} of the baseline's steps)" if hit else "not within the run"
            print(f"  bn={bn:<8s} reaches it at {where}")


if __name__ == "__main__":
    main()
