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

import numpy as np
from decode import ENV, KALDI_BIN, YESNO, yesno_loglikes

from asr_bn.alignments import read_transition_model
from asr_bn.io import write_ark_scp

import _proc


def _yesno(work: Path) -> tuple[Path, Path, Path]:
    """(lat.scp, loglikes.scp, final.mdl): asr-bn's lattices of Kaldi's GMM log-likelihoods of yesno's test set
    (bench/decode.py's), rescored with noisier copies of them (a second "network", so the rescoring changes them)."""
    import kaldiio

    from asr_bn.decode import DecodeConfig, decode

    model = YESNO / "exp/mono"
    ll = yesno_loglikes(work, 1)
    rng = np.random.default_rng(0)
    other = {u: (m + rng.normal(0, 2, m.shape)).astype(np.float32) for u, m in kaldiio.load_ark(str(ll))}
    write_ark_scp(work / "other.ark", work / "other.scp", other.items())
    decode(model / "graph", model / "final.mdl", ll, work / "lat", DecodeConfig(lattices=True))
    return work / "lat" / "lat.scp", work / "other.scp", model / "final.mdl"


def ours(lat_scp: Path, loglikes_scp: Path, model: Path, utts: list[str]) -> tuple[float, float]:
    """(CPU seconds, total log-likelihood) of `Mmi.denominator` over `utts` (the lattice and the matrix read, the
    arcs' frames, rescoring, forward-backward, the pdf posteriors)."""
    import kaldiio

    from asr_bn.train.mmi import Mmi

    start = time.process_time()
    mmi = Mmi(lat_scp, model, np.ones(read_transition_model(model).num_pdfs), 0.1, True)  # priors: unused here
    loglikes = kaldiio.load_scp(str(loglikes_scp))
    total = sum(mmi.denominator(utt, loglikes[utt].astype(np.float64))[1] for utt in utts)
    return time.process_time() - start, total


def kaldi_cmd(lat_scp: Path, loglikes_scp: Path, model: Path) -> list[str]:
    return ["sh", "-c", f"{KALDI_BIN}/lattice-rescore-mapped {model} scp:{lat_scp} scp:{loglikes_scp} ark:- | "
            f"{KALDI_BIN}/lattice-to-post --acoustic-scale=0.1 ark:- ark:/dev/null"]


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
