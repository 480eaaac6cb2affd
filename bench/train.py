"""Training throughput (real frames per second) and the share of step time spent waiting for data, through the
real `asr_bn.train.train` loop, with 0 and N DataLoader workers side by side.

Synthetic prepared dir: 40-dim raw fbank-like features (deltas → 120 inputs, speaker CMVN applied on the fly as
in training), random pdf targets, lengths uniform in [--min-len, --max-len]. Each run trains one epoch; the
figures are the medians over the metrics.jsonl rows (one per --log-every updates), the first row (worker
start-up, warm-up) left out. Target: data wait ≤ 5 % of step time.

    python bench/train.py                        # CPU: 2 x 128 model, batch 8 (the paper's shape is minutes per step)
    python bench/train.py --paper --device cuda  # GPU: 5 x 250, batch 24, 120 inputs, lengths 300–1300
    python bench/train.py --threads 1            # on a loaded machine
    python bench/train.py --units 16             # fast steps: how much the DataLoader workers hide
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from asr_bn.batching import BucketingSampler, UtteranceDataset, make_loader
from asr_bn.cmvn import compute_cmvn_stats
from asr_bn.features import FbankConfig, FeaturePipeline
from asr_bn.io import write_ark_scp, write_text
from asr_bn.train import TrainConfig, is_finished, train


def make_dir(path: Path, n: int, min_len: int, max_len: int, num_pdfs: int, seed: int) -> Path:
    """A prepared data dir of `n` synthetic utterances from 8 speakers (what `asr-bn prep` + targets write)."""
    rng = np.random.default_rng(seed)
    utts = [f"spk{i % 8}-utt{i:05d}" for i in range(n)]
    lengths = rng.integers(min_len, max_len + 1, n)
    feats = {u: rng.standard_normal((t, 40)).astype(np.float32) for u, t in zip(utts, lengths)}
    write_ark_scp(path / "feats.ark", path / "feats.scp", feats.items())
    write_ark_scp(path / "pdf.ark", path / "pdf.scp", ((u, rng.integers(0, num_pdfs, len(f)).astype(np.int32))
                                                      for u, f in feats.items()))  # fmt: skip
    speakers = sorted({u.split("-")[0] for u in utts})
    stats = ((s, compute_cmvn_stats([f for u, f in feats.items() if u.startswith(s + "-")])) for s in speakers)
    write_ark_scp(path / "cmvn.ark", path / "cmvn.scp", stats)
    write_text(path / "utt2num_frames", "".join(f"{u} {len(f)}\n" for u, f in feats.items()))
    write_text(path / "utt2spk", "".join(f"{u} {u.split('-')[0]}\n" for u in utts))
    FeaturePipeline(fbank=FbankConfig(num_mel_bins=40), cmvn="speaker", delta_order=2).save(path / "pipeline.json")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--paper", action="store_true", help="5 x 250, batch 24, lengths 300–1300, 3000 pdfs")
    ap.add_argument("--updates", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the second run (the first has 0)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--amp", default="none")
    ap.add_argument("--bn", default="sequence")
    ap.add_argument("--units", type=int, help="override the model width (small = fast steps, as on a GPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.paper:
        layers, units, batch, min_len, max_len, pdfs, log_every = 5, 250, 24, 300, 1300, 3000, 5
    else:
        layers, units, batch, min_len, max_len, pdfs, log_every = 2, 128, 8, 200, 600, 500, 3
    units = args.units or units
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = make_dir(root / "train", args.updates * batch, min_len, max_len, pdfs, seed=0)
        dev = make_dir(root / "dev", batch, min_len, max_len, pdfs, seed=1)
        print(f"{args.device}, {args.threads} threads, {layers} x {units} BLSTM (bn {args.bn}, amp {args.amp}), "
              f"batch {batch}, lengths {min_len}–{max_len}, {args.updates} updates per run")  # fmt: skip
        print(f"{'DataLoader':<22} {'frames/s':>10} {'data wait':>10} {'step ms':>9}")
        for workers in (0, args.workers):
            cfg = TrainConfig(
                data=str(data), dev=str(dev), exp_dir=str(root / f"exp{workers}"), layers=layers, units=units,
                bn=args.bn, batch_size=batch, max_train_frames=None, epochs=1, log_every=log_every,
                checkpoint_every=10**9, device=args.device, amp=args.amp, num_workers=workers, patience=0,
            )  # fmt: skip
            if not is_finished(*train(cfg)):
                raise SystemExit("interrupted")
            rows = [json.loads(x) for x in (root / f"exp{workers}" / "metrics.jsonl").read_text().splitlines()]
            rows = [r for r in rows if r["kind"] == "train"][1:]
            fps = statistics.median(r["frames_per_s"] for r in rows)
            wait = statistics.median(r["data_wait"] for r in rows)
            step_ms = 1000 * batch * (min_len + max_len) / 2 / fps
            print(f"{f'{workers} workers':<22} {fps:>10,.0f} {wait:>9.1%} {step_ms:>9.0f}")
        for workers in (0, args.workers):
            print(f"{f'data only, {workers} workers':<22} {data_only(data, batch, pdfs, workers):>10,.0f}")


def data_only(data: Path, batch: int, num_pdfs: int, workers: int) -> float:
    """Frames per second of the input pipeline alone (read, CMVN, deltas, pad), one pass, after the first batch."""
    dataset = UtteranceDataset(data, num_pdfs)
    loader = make_loader(dataset, BucketingSampler(dataset.lengths, batch), workers)
    frames, start = 0, 0.0
    for i, b in enumerate(loader):
        if i == 0:
            start = time.perf_counter()
        else:
            frames += b.num_frames
    return frames / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
