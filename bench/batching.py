"""Padding waste of the length-bucketing sampler against random batching, on WSJ-like utterance lengths.

37 000 utterances (like WSJ si284), lengths log-normal around 700 frames, clipped to 100–1300 (the paper's filter).
Waste = padded frames / all frames of the padded batches (1 − Σ len / Σ B·T_max), over 3 epochs. Deterministic:
the figures do not depend on the machine; the last column is the time to build one epoch's batches.

    python bench/batching.py
    python bench/batching.py --utts 37000 --batch-size 24 --epochs 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from asr_bn.batching import BucketingSampler, padding_waste


def wsj_like_lengths(n: int, seed: int = 0) -> np.ndarray:
    """Log-normal utterance lengths (median 700 frames, σ 0.4) clipped to 100–1300 frames."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(700), 0.4, n), 100, 1300).astype(np.int64)


def random_batches(n: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """Shuffled, unsorted batches: the baseline without bucketing."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--utts", type=int, default=37_000)
    ap.add_argument("--batch-size", type=int, default=24)
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    lengths = wsj_like_lengths(args.utts)
    print(f"{args.utts} utterances, {lengths.sum():,} frames, mean {lengths.mean():.0f}, "
          f"p1/p50/p99 {np.percentile(lengths, [1, 50, 99]).astype(int).tolist()}")  # fmt: skip
    rows = []
    mean_frames = int(lengths.mean() * args.batch_size)
    for name, make in (
        (f"random, {args.batch_size} utts", lambda e: random_batches(args.utts, args.batch_size, e)),
        *(
            (f"bucketing, {args.batch_size} utts, pools of {p} batches",
             lambda e, p=p: _epoch(BucketingSampler(lengths, args.batch_size, pool_batches=p), e))
            for p in (25, 100, 400)
        ),
        (f"bucketing, --max-frames {mean_frames}",
         lambda e: _epoch(BucketingSampler(lengths, None, max_frames=mean_frames), e)),
    ):  # fmt: skip
        wastes, seconds, count = [], [], 0
        for epoch in range(args.epochs):
            t0 = time.perf_counter()
            batches = make(epoch)
            seconds.append(time.perf_counter() - t0)
            wastes.append(padding_waste(lengths, batches))
            count = len(batches)
        rows.append((name, float(np.mean(wastes)), count, float(np.median(seconds))))
    base = rows[0][1]
    print(f"{'batching':<44} {'waste':>7} {'vs random':>10} {'batches':>8} {'ms/epoch':>9}")
    for name, waste, count, sec in rows:
        print(f"{name:<44} {waste:>6.2%} {waste / base:>9.3f}x {count:>8} {1000 * sec:>9.1f}")


def _epoch(sampler: BucketingSampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return list(sampler)


if __name__ == "__main__":
    main()
