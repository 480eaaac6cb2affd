"""Running averages or population statistics for a trained BN model's inference: dev frame CE and FER of each.

The paper's alternative to momentum running averages is to re-estimate the BN statistics over training batches
(`asr_bn.model.reestimate_population_stats`, `asr-bn train --population-batches N`). This script takes a trained
model dir and prints, side by side, its dev scores with the saved statistics and with population statistics over
the first N training batches (the sampler's seed-0 order, as training's --population-batches uses), for several N.

    python bench/bn_statistics.py recipes/an4/exp/blstm_bn_seq recipes/an4/prep/train recipes/an4/prep/dev
    python bench/bn_statistics.py EXP TRAIN DEV --batches 1,5,20,0 --batch-size 24    # 0 = every training batch
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import time
from pathlib import Path

import torch

from asr_bn.batching import BucketingSampler, UtteranceDataset, filter_by_length, make_loader
from asr_bn.forward import ForwardConfig, load_acoustic_model, score_frames
from asr_bn.model import reestimate_population_stats
from asr_bn.report import Report
from asr_bn.train import load_model


def main() -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("exp", type=Path, help="model dir of asr-bn train (final.pt), trained with --bn frame|sequence")
    parser.add_argument("train", type=Path, help="prepared training dir (pdf.scp)")
    parser.add_argument("dev", type=Path, help="prepared dev dir (pdf.scp)")
    parser.add_argument("--batches", default="1,5,20,0", help="comma-separated N; 0 = all training batches")
    parser.add_argument("--batch-size", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the recurrence's small matrices gain nothing from more on a shared CPU

    model, _ = load_model(args.exp / "final.pt")
    config = ForwardConfig(device="cpu")
    acoustic = load_acoustic_model(args.exp, config)  # BN folded into the weights, as asr-bn forward runs it
    utts, lengths = filter_by_length(args.train, None, Report("train"))
    train = make_loader(UtteranceDataset(args.train, acoustic.num_pdfs, utts, cache=True),
                        BucketingSampler(lengths, args.batch_size, seed=0), num_workers=0)  # fmt: skip
    t0 = time.perf_counter()
    saved = score_frames(acoustic, args.dev, config)
    print(f"{'BN statistics':<40} {'dev CE':>8} {'dev FER %':>10} {'seconds':>8}")
    print(f"{'saved in final.pt':<40} {saved.ce:>8.4f} {100 * saved.fer:>10.2f} {time.perf_counter() - t0:>8.1f}")
    for n in (int(v) for v in args.batches.split(",")):
        t0 = time.perf_counter()
        copy_ = copy.deepcopy(model)
        used = reestimate_population_stats(copy_, ((b.feats, b.lengths) for b in itertools.islice(train, n or None)))
        scores = score_frames(dataclasses.replace(acoustic, net=copy_.fold_bn().eval()), args.dev, config)
        label = f"population, {used} training batches"
        print(f"{label:<40} {scores.ce:>8.4f} {100 * scores.fer:>10.2f} {time.perf_counter() - t0:>8.1f}")


if __name__ == "__main__":
    main()
