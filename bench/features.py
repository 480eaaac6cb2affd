"""Fbank throughput: asr-bn's batched torch fbank vs kaldi-native-fbank, on the same audio in one run.

    python bench/features.py            # 200 AN4 utterances (synthetic audio when ../shared/data is absent)
    python bench/features.py --quick    # 40 utterances, one timing each: a smoke run

Prints seconds of audio per second of compute (x real time) single-thread and with all threads, the ratio
ours / kaldi-native-fbank, and a GPU row when CUDA is available; dither 0 except the row that says otherwise.
Each figure is the best of --repeats runs.
kaldi-native-fbank holds the GIL, so its all-threads row uses one process per core (as Kaldi's `nj` does).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from asr_bn.features import FbankConfig, compute_fbank

AN4 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "an4" / "wav" / "an4_clstk"
_WAVES: list[np.ndarray] = []  # set before the process pool forks, so workers inherit the audio
_KNF_OPTS = None


def load_audio(num_utts: int, seed: int = 0) -> tuple[list[np.ndarray], str]:
    """`num_utts` AN4 training utterances in the int16 range, or synthetic noise of AN4-like lengths if absent."""
    files = sorted(AN4.glob("*/*.wav"))[:num_utts]
    if files:
        import soundfile as sf

        return [sf.read(str(f), dtype="int16")[0].astype(np.float32) for f in files], f"{len(files)} AN4 utterances"
    rng = np.random.default_rng(seed)
    lengths = rng.integers(16000, 6 * 16000, num_utts)
    return [(rng.normal(0, 1000, n)).astype(np.float32) for n in lengths], f"{num_utts} synthetic utterances (no AN4)"


def _knf_options(cfg: FbankConfig):  # noqa: ANN202 - knf type
    import kaldi_native_fbank as knf

    o = knf.FbankOptions()
    o.frame_opts.samp_freq = cfg.sample_frequency
    o.frame_opts.dither = cfg.dither
    o.mel_opts.num_bins = cfg.num_mel_bins
    return o


def _knf_one(i: int) -> int:
    import kaldi_native_fbank as knf

    comp = knf.OnlineFbank(_KNF_OPTS)
    comp.accept_waveform(16000, _WAVES[i])
    comp.input_finished()
    feats = np.stack([comp.get_frame(t) for t in range(comp.num_frames_ready)])
    return feats.shape[0]


def _knf_range(bounds: tuple[int, int]) -> int:
    return sum(_knf_one(i) for i in range(*bounds))


def best_time(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of `repeats` calls after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    """Run the benchmark and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-utts", type=int, default=200, help="utterances to compute (default 200)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row; the best is shown (default 3)")
    parser.add_argument("--quick", action="store_true", help="40 utterances, one timed run each")
    args = parser.parse_args()
    num_utts, repeats = (40, 1) if args.quick else (args.num_utts, args.repeats)

    global _WAVES, _KNF_OPTS
    _WAVES, source = load_audio(num_utts)
    cfg = FbankConfig(dither=0.0)
    _KNF_OPTS = _knf_options(cfg)
    audio_s = sum(len(w) for w in _WAVES) / cfg.sample_frequency
    cores = os.cpu_count() or 1
    print(f"audio: {source}, {audio_s:.1f} s at {cfg.sample_frequency:g} Hz; {cfg.num_mel_bins} bins, dither 0")
    print(f"torch {torch.__version__}, {cores} CPU cores, default {torch.get_num_threads()} torch threads")

    rows: list[tuple[str, float, float]] = []
    torch.set_num_threads(1)  # as `asr-bn prep` does: each group's ops on one thread, `threads` groups at once
    for threads in sorted({1, cores}):
        ours = best_time(lambda: compute_fbank(_WAVES, cfg, threads=threads), repeats)
        if threads == 1:
            knf_s = best_time(lambda: [_knf_one(i) for i in range(len(_WAVES))], repeats)
        else:
            step = -(-len(_WAVES) // threads)
            parts = [(a, min(a + step, len(_WAVES))) for a in range(0, len(_WAVES), step)]
            with mp.get_context("fork").Pool(threads) as pool:
                knf_s = best_time(lambda: sum(pool.map(_knf_range, parts)), repeats)
        rows.append((f"CPU, {threads} thread{'s' if threads > 1 else ''}", audio_s / ours, audio_s / knf_s))
        if threads == 1:  # Kaldi's default dither 1.0: both draw one Gaussian per sample and frame
            dithered = FbankConfig(dither=1.0)
            ours = best_time(lambda: compute_fbank(_WAVES, dithered), repeats)
            _KNF_OPTS = _knf_options(dithered)
            knf_s = best_time(lambda: [_knf_one(i) for i in range(len(_WAVES))], repeats)
            _KNF_OPTS = _knf_options(cfg)
            rows.append(("CPU, 1 thread, dither 1.0", audio_s / ours, audio_s / knf_s))
    if torch.cuda.is_available():
        def on_gpu() -> None:
            compute_fbank(_WAVES, cfg, device="cuda")
            torch.cuda.synchronize()  # results are already copied back to CPU; this only makes timing explicit

        gpu = best_time(on_gpu, repeats)
        rows.append((f"GPU {torch.cuda.get_device_name()} (vs knf, all cores)", audio_s / gpu, rows[-1][2]))

    print(f"{'':42s} {'asr-bn (x RT)':>14s} {'knf (x RT)':>11s} {'ours/knf':>9s}")
    for name, ours_rt, knf_rt in rows:
        print(f"{name:42s} {ours_rt:14.0f} {knf_rt:11.0f} {ours_rt / knf_rt:8.2f}x")


if __name__ == "__main__":
    main()
