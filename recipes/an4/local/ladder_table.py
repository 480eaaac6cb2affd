#!/usr/bin/env python3
"""The AN4 GMM ladder side by side: Kaldi's (kaldi_ladder.sh) and asr-bn's (asr_bn_ladder.sh) rungs in one table.

Per rung: pdfs and Gaussians (Kaldi's hmm-info / gmm-info on each final.mdl), the final training pass's average
log-likelihood per frame (Gaussian only: Kaldi's last gmm-acc-stats-ali logs, asr-bn's iterations.jsonl), dev and
test WER with the trigram, and training seconds (exp/times). Both sides' lattices are scored alike with Kaldi's
tools (lattice-scale --inv-acoustic-scale=LMWT | lattice-add-penalty | lattice-best-path, as steps/score_kaldi.sh)
and asr-bn's compute-wer: LM weight and insertion penalty chosen on dev, and where settings tie on dev the test
WER is the mean over all of them (the tie rule of issue 12's table), their range beside it.

Usage: ladder_table.py --kaldi KALDI_WORKDIR --asr-bn LABEL=WORKDIR [--asr-bn LABEL=WORKDIR ...] [--lmwt 1:20]
                       [--graph tg|loop] [--network LABEL=EXP_DIR ...]
e.g. ladder_table.py --kaldi /work/runs/ladder-kaldi/k --asr-bn "Kaldi MFCC=/work/runs/ladder-kaldi/asrbn_mfcc"
--network adds a row per network of recipes/an4/run.sh (its EXP_DIR/decode_{dev,test}_GRAPH lattices, scored by
the same rule, words from the Kaldi workdir's data/lang).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from asr_bn.errors import AsrBnError
from asr_bn.io import write_text
from asr_bn.score import read_text, score_wer

RUNGS = ("mono", "tri1", "tri2b", "tri3b")
WIPS = ("0.0", "0.5", "1.0")  # steps/score_kaldi.sh's word insertion penalties


@dataclass
class Sweep:
    """WER (errors, words) of one decode dir per (LM weight, insertion penalty)."""

    errors: dict[tuple[int, str], int]
    words: int


def run(cmd: str, kaldi: Path) -> str:
    """Run a shell pipeline of Kaldi binaries (the bundle's bin/ first on PATH); its stdout."""
    env = {**os.environ, "PATH": f"{kaldi}/bin:{os.environ['PATH']}", "LC_ALL": "C", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise AsrBnError(f"{cmd.split()[0]} failed: {last}")
    return proc.stdout


def sweep(decode_dir: Path, words_txt: Path, ref_text: Path, lmwts: range, kaldi: Path) -> Sweep | None:
    """Score a decode dir's lattices at every LM weight and penalty (hypotheses cached under scoring_ladder/)."""
    gz = sorted(decode_dir.glob("lat.*.gz"))
    if gz:
        lats = "ark:gunzip -c " + " ".join(str(p) for p in gz) + " |"
    elif (decode_dir / "lat.scp").is_file():
        lats = f"scp:{decode_dir / 'lat.scp'}"
    else:
        return None
    words = {i: w for w, i in (line.split() for line in words_txt.read_text(encoding="utf-8").splitlines())}
    ref = read_text(ref_text)
    errors = {}
    total = 0
    for wip in WIPS:
        for lmwt in lmwts:
            hyp = decode_dir / "scoring_ladder" / f"penalty_{wip}" / f"{lmwt}.txt"
            if not hyp.is_file():
                out = run(f"lattice-scale --inv-acoustic-scale={lmwt} '{lats}' ark:- 2>/dev/null | "
                          f"lattice-add-penalty --word-ins-penalty={wip} ark:- ark:- 2>/dev/null | "
                          "lattice-best-path ark:- ark,t:- 2>/dev/null", kaldi)
                lines = [" ".join([f[0]] + [words[i] for i in f[1:]]) for f in (ln.split() for ln in out.splitlines())]
                hyp.parent.mkdir(parents=True, exist_ok=True)
                write_text(hyp, "".join(line + "\n" for line in lines))
            result = score_wer(ref, hyp, mode="all")
            errors[(lmwt, wip)] = result.counts.errors
            total = result.counts.words
    return Sweep(errors, total)


def dev_test(dev: Sweep | None, test: Sweep | None) -> tuple[str, str]:
    """Dev WER at its best settings; test WER as the mean over the settings that tie on dev (their range)."""
    if dev is None or test is None:
        return "–", "–"
    best = min(dev.errors.values())
    ties = [k for k, e in dev.errors.items() if e == best]
    wers = [100.0 * test.errors[k] / test.words for k in ties]
    mean = sum(wers) / len(wers)
    dev_s = f"{100.0 * best / dev.words:.2f}"
    test_s = f"{mean:.2f}" + (f" ({min(wers):.2f}–{max(wers):.2f}, {len(ties)} ties)" if len(ties) > 1 else "")
    return dev_s, test_s


def model_info(mdl: Path, kaldi: Path) -> tuple[int, int]:
    """(pdfs, Gaussians) of a Kaldi model file, as gmm-info prints them."""
    out = run(f"gmm-info {mdl} 2>/dev/null", kaldi)
    pdfs = int(re.search(r"number of pdfs (\d+)", out).group(1))
    gauss = int(re.search(r"number of gaussians (\d+)", out).group(1))
    return pdfs, gauss


def kaldi_avg_like(exp: Path) -> float | None:
    """The last training pass's 'Overall avg like per frame (Gaussian only)', frame-weighted over the jobs."""
    logs: dict[int, list[Path]] = {}
    for p in exp.glob("log/acc.*.*.log"):
        logs.setdefault(int(p.name.split(".")[1]), []).append(p)
    if not logs:
        return None
    like = frames = 0.0
    for p in logs[max(logs)]:
        m = re.search(r"Overall avg like per frame \(Gaussian only\) = (\S+) over (\S+) frames", p.read_text())
        if m:
            like += float(m.group(1)) * float(m.group(2))
            frames += float(m.group(2))
    return like / frames if frames else None


def asr_bn_avg_like(exp: Path) -> float | None:
    """The last pass's avg_like of iterations.jsonl (gmm-acc-stats-ali's Gaussian-only figure)."""
    path = exp / "iterations.jsonl"
    if not path.is_file():
        return None
    return json.loads(path.read_text().splitlines()[-1])["avg_like"]


def times(workdir: Path) -> dict[str, float]:
    """Seconds per step from exp/times (`name seconds` lines)."""
    path = workdir / "exp" / "times"
    if not path.is_file():
        return {}
    return {k: float(v) for k, v in (line.split() for line in path.read_text().splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kaldi", type=Path, required=True, help="kaldi_ladder.sh's WORKDIR")
    ap.add_argument("--asr-bn", action="append", default=[], help="LABEL=WORKDIR of asr_bn_ladder.sh")
    ap.add_argument("--bundle", type=Path, default=Path(__file__).resolve().parents[3] / ".." / "shared" / "kaldi")
    ap.add_argument("--lmwt", default="1:20", help="LM weights swept (default 1:20)")
    ap.add_argument("--graph", default="tg", help="the graph whose decodings are scored: tg (default) or loop")
    ap.add_argument("--network", action="append", default=[], help="LABEL=EXP_DIR of a network of run.sh")
    args = ap.parse_args()
    lo, hi = (int(x) for x in args.lmwt.split(":"))
    lmwts = range(lo, hi + 1)
    k = args.kaldi
    refs = {s: k / "data" / s / "text" for s in ("dev", "test")}
    systems = [("Kaldi", k, lambda r: k / "exp" / r, lambda r: k / "exp" / r)]
    for spec in args.asr_bn:
        label, _, path = spec.partition("=")
        w = Path(path)
        exp = Path(w / "exp")
        systems.append((f"asr-bn ({label})", w, lambda r, e=exp: e / r, lambda r, w=w: w / "decode" / r))
    print("| rung | system | pdfs / Gaussians | avg log-like / frame | dev WER | test WER (mean over dev ties) | "
          "train s |")
    print("|---|---|---|---|---|---|---|")
    for rung in RUNGS:
        for name, workdir, exp_of, dec_of in systems:
            exp, dec = exp_of(rung), dec_of(rung)
            if not (exp / "final.mdl").is_file():
                continue
            pdfs, gauss = model_info(exp / "final.mdl", args.bundle)
            like = kaldi_avg_like(exp) if name == "Kaldi" else asr_bn_avg_like(exp)
            g = args.graph
            sweeps = {s: sweep(dec / f"decode_{s}_{g}", dec / f"graph_{g}" / "words.txt", refs[s], lmwts, args.bundle)
                      if (dec / f"decode_{s}_{g}").is_dir() else None for s in ("dev", "test")}
            dev_s, test_s = dev_test(sweeps["dev"], sweeps["test"])
            t = times(workdir).get(rung)
            like_s = "–" if like is None else f"{like:.3f}"
            t_s = "–" if t is None else f"{t:.0f}"
            print(f"| {rung} | {name} | {pdfs} / {gauss} | {like_s} | {dev_s} | {test_s} | {t_s} |")
    for spec in args.network:
        label, _, path = spec.partition("=")
        sweeps = {s: sweep(Path(path) / f"decode_{s}_{args.graph}", k / "data" / "lang" / "words.txt", refs[s], lmwts,
                           args.bundle) for s in ("dev", "test")}
        dev_s, test_s = dev_test(sweeps["dev"], sweeps["test"])
        print(f"| network | {label} | – | – | {dev_s} | {test_s} | – |")


if __name__ == "__main__":
    main()
