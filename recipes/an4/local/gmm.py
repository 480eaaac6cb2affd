#!/usr/bin/env python3
"""Monophone HMM-GMM training and forced alignment for the recipe (asr_bn.hmm_gmm; no Kaldi binaries).

    python local/gmm.py train-mono LANG PREP_DIR EXP_DIR [--fast]
        reads  LANG/{lexicon,phones,words}.txt, PREP_DIR (an `asr-bn prep` output: feats.scp of raw fbank, text,
               utt2spk)
        writes EXP_DIR/{final.mdl, tree, phones.txt, topo, iterations.jsonl, config.json, report.json}
               (as Kaldi's steps/train_mono.sh)
    python local/gmm.py align LANG PREP_DIR MODEL_DIR ALI_DIR [--nj N] [--loglikes SCP]
        reads  MODEL_DIR/final.mdl and the same inputs; with --loglikes, a network's per-frame pdf log-likelihoods
               (`asr-bn forward` output) score the frames instead of the GMM (Kaldi's steps/nnet/align.sh)
        writes ALI_DIR/{ali.1.gz … ali.N.gz, num_jobs, final.mdl, tree, phones.txt, topo, report.json}
               (as Kaldi's steps/align_si.sh)

    python local/gmm.py compute-likes PREP_DIR MODEL_DIR OUT_DIR
        writes OUT_DIR/loglikes.{ark,scp}: per-frame log-likelihoods of every pdf (Kaldi's gmm-compute-likes), for
               `asr-bn decode` (a GMM decode checks the alignment model)

report.json is written last: it marks a complete run. Utterances that could not be used are named in it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from asr_bn.decode import read_loglikes
from asr_bn.errors import AsrBnError
from asr_bn.hmm_gmm import AlignConfig, GmmSystem, MonoConfig, align, prepared_gmm_features, train_mono
from asr_bn.io import write_ark_scp
from asr_bn.lang import read_lang

# --fast (CI): a quarter of Kaldi's iterations and Gaussians; alignments are still usable, only rougher.
FAST = MonoConfig(num_iters=10, max_iter_inc=8, total_gauss=300, realign_iters=(1, 2, 3, 4, 5, 6, 8))


def main() -> None:
    """Command-line entry (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train-mono", help="train a monophone system (steps/train_mono.sh)")
    t.add_argument("lang", type=Path)
    t.add_argument("prep_dir", type=Path)
    t.add_argument("exp_dir", type=Path)
    t.add_argument("--fast", action="store_true", help="few iterations and Gaussians (CI)")
    a = sub.add_parser("align", help="force-align with a trained model (steps/align_si.sh)")
    a.add_argument("lang", type=Path)
    a.add_argument("prep_dir", type=Path)
    a.add_argument("model_dir", type=Path)
    a.add_argument("ali_dir", type=Path)
    a.add_argument("--nj", type=int, default=1, help="number of ali.N.gz archives (default 1)")
    a.add_argument("--loglikes", help="scp of a network's log-likelihoods (asr-bn forward) to align with")
    c = sub.add_parser("compute-likes", help="GMM log-likelihoods for asr-bn decode (gmm-compute-likes)")
    c.add_argument("prep_dir", type=Path)
    c.add_argument("model_dir", type=Path)
    c.add_argument("out_dir", type=Path)
    args = parser.parse_args()
    try:
        feats, text, feat_report = prepared_gmm_features(args.prep_dir)
        for line in feat_report.lines():
            print(line)
        if args.command == "compute-likes":
            system = GmmSystem.load(args.model_dir / "final.mdl")
            n = write_ark_scp(args.out_dir / "loglikes.ark", args.out_dir / "loglikes.scp",
                              ((utt, system.log_likelihoods(f)) for utt, f in feats.items()))
            print(f"wrote log-likelihoods of {n} utterances to {args.out_dir}/loglikes.scp")
            return
        lang = read_lang(args.lang)
        if args.command == "train-mono":
            cfg = FAST if args.fast else MonoConfig()
            _, report = train_mono(feats, text, lang, args.exp_dir, cfg,
                                   feature_info={"prep_dir": str(args.prep_dir.resolve()), "num_ceps": 13,
                                                 "cmvn": "per-speaker means", "deltas": 2})
        else:
            system = GmmSystem.load(args.model_dir / "final.mdl")
            if args.loglikes:
                feats = dict(read_loglikes(args.loglikes))
            report = align(system, feats, text, lang, args.ali_dir, AlignConfig(num_jobs=args.nj),
                           network=bool(args.loglikes))
    except AsrBnError as e:
        print(f"{sys.argv[0]}: error: {e}", file=sys.stderr)
        sys.exit(1)
    for line in report.lines():
        print(line)


if __name__ == "__main__":
    main()
