"""Lattice posteriors, the denominator of MMI training: asr-bn's rescoring + forward-backward (`asr_bn.lattice`, as
`asr_bn.train.mmi.Mmi` runs it per utterance) against Kaldi's `lattice-rescore-mapped | lattice-to-post
--acoustic-scale=0.1`, same lattices and log-likelihoods, side by side in one run.

    python bench/lattice_post.py                 # yesno: asr-bn's lattices of Kaldi's GMM log-likelihoods
    python bench/lattice_post.py --lat L/lat.scp --loglikes L/ll.scp --model exp/tri3b/final.mdl --limit 300

asr-bn runs in this process (lattices and log-likelihoods read, rescored, forward-backward, pdf posteriors), Kaldi
as whole processes (its start-up included: a few ms). Each row is the median of --rounds of CPU seconds (user + sys),
the runs interleaved; the ratio is asr-bn / Kaldi. The total log-likelihood of both is printed as a check.
Needs ../shared/kaldi and, for the default inputs, ../shared/data/yesno.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _proc
import numpy as np

ROOT = Path(__file__).resolve().parents[1].parent / "shared"
KALDI_BIN = ROOT / "kaldi" / "bin"
YESNO = ROOT / "data" / "yesno"
ENV = {**_proc.ENV, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "LC_ALL": "C",
       "PATH": f"{KALDI_BIN}:{_proc.ENV.get('PATH', '')}"}


def _yesno(work: Path) -> tuple[Path, Path, Path]:
    """(lat.scp, loglikes.scp, final.mdl): Kaldi's GMM log-likelihoods of yesno's test set, noisier copies of them
    as a second "network" (so the rescoring changes the lattices), and asr-bn's lattices of the first."""
    from asr_bn.decode import DecodeConfig, decode
    from asr_bn.io import write_ark_scp

    data, model = YESNO / "data/test_yesno", YESNO / "exp/mono/final.mdl"
    wav = "".join(f"{u} {YESNO / p}\n" for u, p in (line.split() for line in (data / "wav.scp").open()))
    (work / "wav.scp").write_text(wav)
    mfcc, cmvn = work / "mfcc.ark", work / "cmvn.ark"  # as yesno's run: MFCC without energy, CMVN (one speaker), deltas
    script = (f"compute-mfcc-feats --use-energy=false --sample-frequency=8000 --dither=0 scp:{work / 'wav.scp'} "
              f"ark:{mfcc} && compute-cmvn-stats ark:{mfcc} ark:{cmvn} && apply-cmvn ark:{cmvn} ark:{mfcc} ark:- | "
              f"add-deltas ark:- ark:- | gmm-compute-likes {model} ark:- ark:{work / 'll.ark'}")
    subprocess.run(["sh", "-c", script], env=ENV, check=True, capture_output=True)
    import kaldiio

    rng = np.random.default_rng(0)
    other = {u: (m + rng.normal(0, 2, m.shape)).astype(np.float32) for u, m in kaldiio.load_ark(str(work / "ll.ark"))}
    write_ark_scp(work / "other.ark", work / "other.scp", other.items())
    decode(YESNO / "exp/mono/graph", model, work / "ll.ark", work / "lat", DecodeConfig(lattices=True))
    return work / "lat" / "lat.scp", work / "other.scp", model


def ours(lat_scp: Path, loglikes_scp: Path, model: Path, utts: list[str]) -> tuple[float, float]:
    """(CPU seconds, total log-likelihood) of asr-bn's pass over `utts`: what Mmi.denominator does per utterance."""
    import kaldiio

    from asr_bn.alignments import read_transition_model
    from asr_bn.lattice import LatticeTable, arc_frames, forward_backward, rescore_lattice

    start = time.process_time()
    tid_pdf = read_transition_model(model).tid_pdf
    lattices, loglikes = LatticeTable(lat_scp), kaldiio.load_scp(str(loglikes_scp))
    total = 0.0
    for utt in utts:
        lat, ll = lattices[utt], loglikes[utt].astype(np.float64)
        times = arc_frames(lat, utt)
        frames, tids, posts, log_like = forward_backward(rescore_lattice(lat, ll, tid_pdf, utt, times), 0.1, utt, times)
        np.add.at(np.zeros(ll.shape), (frames, tid_pdf[tids]), posts)
        total += log_like
    return time.process_time() - start, total


def kaldi_cmd(lat_scp: Path, loglikes_scp: Path, model: Path) -> list[str]:
    return ["sh", "-c", f"lattice-rescore-mapped {model} scp:{lat_scp} scp:{loglikes_scp} ark:- | "
            "lattice-to-post --acoustic-scale=0.1 ark:- ark:/dev/null"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lat", type=Path, help="lat.scp of asr-bn decode --lattices (default: yesno's)")
    parser.add_argument("--loglikes", type=Path, help="the .scp of the log-likelihoods that rescore them")
    parser.add_argument("--model", type=Path, help="the lattices' final.mdl")
    parser.add_argument("--limit", type=int, default=0, help="only the first N utterances (0: all)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not KALDI_BIN.is_dir():
        sys.exit(f"{KALDI_BIN} is absent: this benchmark compares against Kaldi's binaries")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lat, ll, model = (args.lat, args.loglikes, args.model) if args.lat else _yesno(work)
        lines = lat.read_text().splitlines()
        if args.limit:
            lines = lines[: args.limit]
            (work / "lat.scp").write_text("\n".join(lines) + "\n")
            lat = work / "lat.scp"
        utts = [line.split()[0] for line in lines]
        cmd = kaldi_cmd(lat, ll, model)
        log = subprocess.run(cmd, capture_output=True, env=ENV, check=True).stderr.decode()
        kaldi_like = re.search(r"Overall average log-like/frame is (\S+) over (\d+) frames", log)
        ours(lat, ll, model, utts[:2])  # warm-up: imports
        pairs = [(ours(lat, ll, model, utts), _proc.timed(cmd, ENV)) for _ in range(args.rounds)]
        mine = statistics.median(p[0][0] for p in pairs)
        theirs = statistics.median(p[1][1] for p in pairs)
        ratio = statistics.median(p[0][0] / p[1][1] for p in pairs)
        frames = int(kaldi_like.group(2))
        print(f"{len(utts)} lattices, {frames} frames; CPU s, median of {args.rounds} interleaved rounds")
        print(f"asr-bn rescore + forward-backward (in process)   {mine:8.3f}")
        print(f"Kaldi lattice-rescore-mapped | lattice-to-post   {theirs:8.3f}")
        print(f"ratio asr-bn / Kaldi                              {ratio:8.2f}")
        print(f"log-likelihood per frame: asr-bn {pairs[0][0][1] / frames:.4f}, Kaldi {float(kaldi_like.group(1)):.4f}")


if __name__ == "__main__":
    main()
