#!/usr/bin/env bash
# asr-bn's GMM ladder (asr-bn gmm mono, deltas, lda-mllt, sat with align/align-fmllr between rungs, as
# recipes/any/run.sh stage 3) on any features, and its decoding of dev and test with the trigram, for the side-by-side
# with Kaldi's own ladder (kaldi_ladder.sh; table: ladder_table.py).
#
# Usage: recipes/an4/local/asr_bn_ladder.sh [--nj N] [--stage N] [--trained EXP] [--last RUNG] [--graphs G]
#                                          FEATS LANG ARPA WORKDIR
#   FEATS     a folder with train/ dev/ test/: `asr-bn prep` dirs (the recipe's prep/: asr-bn's cepstra, a DCT of
#             the 40 fbank) or Kaldi data dirs with make_mfcc.sh's feats.scp (kaldi_ladder.sh's data/: Kaldi's MFCC)
#   LANG      the lang dir (the recipe's data/lang); ARPA: the LM of the graphs (the recipe's data/local/lm/tg.arpa)
#   WORKDIR   exp/{mono,tri1,tri2b,tri3b} and their _ali (stage 1), exp/times (seconds per step);
#             decode/<rung>/{graph_G,decode_dev_G,decode_test_G} (stage 2: lattices lat.scp that Kaldi's tools read)
#   --trained EXP  skip stage 1: decode the rungs of an existing exp dir (e.g. the recipe's exp/, left untouched)
#   --nj N    Kaldi's jobs of training, alignment and decoding (default 2); --stage N: start at stage N (default 1)
#   --last RUNG  the last rung trained and decoded: mono, tri1, tri2b or tri3b (default tri3b)
#   --graphs G   the graphs decoded: tg (ARPA, default) and/or loop (a uniform word loop), e.g. "tg loop"
# Budgets as kaldi_ladder.sh: Kaldi's defaults for mono, 500 leaves / 4000 Gaussians for each later rung. The SAT
# rung is decoded in two passes with fMLLR (asr-bn gmm decode-fmllr, as decode_fmllr.sh).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/ladder_lib.sh"  # timed

nj=2
stage=1
trained=
last=tri3b
graphs=tg
while [ $# -gt 0 ]; do
  case $1 in
    --nj) nj=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --trained) trained=$(cd "$2" && pwd); shift 2 ;;
    --last) last=$2; shift 2 ;;
    --graphs) graphs=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "$0: unknown option $1 (see --help)" >&2; exit 1 ;;
    *) break ;;
  esac
done
[ $# -eq 4 ] || { echo "usage: $0 [--nj N] [--stage N] [--trained EXP] FEATS LANG ARPA WORKDIR (see --help)" >&2; exit 1; }
abspath() { (cd "$(dirname "$1")" && echo "$(pwd)/$(basename "$1")"); }
feats=$(abspath "$1") lang=$(abspath "$2") arpa=$(abspath "$3")
for set in train dev test; do
  [ -f "$feats/$set/feats.scp" ] || { echo "$0: $feats/$set/feats.scp is missing" >&2; exit 1; }
done
command -v asr-bn >/dev/null || { echo "$0: asr-bn is not on PATH (activate its environment)" >&2; exit 1; }
mkdir -p "$4"
cd "$4"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (asr_bn_ladder.sh) $*"; }

exp=${trained:-$(pwd)/exp}
if [ "$stage" -le 1 ] && [ -z "$trained" ]; then
  log "Stage 1: asr-bn's ladder on $feats"
  rm -rf exp
  mkdir -p exp
  tr=$feats/train
  prev=
  for step in mono:mono tri1:deltas tri2b:lda-mllt tri3b:sat; do  # rung : asr-bn gmm command, each from prev's _ali
    rung=${step%%:*} cmd=${step#*:}
    if [ "$rung" = mono ]; then
      timed mono asr-bn gmm mono "$tr" "$lang" exp/mono --nj "$nj" --cache
    else
      timed "$rung" asr-bn gmm "$cmd" 500 4000 "$tr" "$lang" "exp/${prev}_ali" "exp/$rung" --cache
    fi
    aligner=align
    [ "$rung" = tri3b ] && aligner=align-fmllr
    timed "${rung}_ali" asr-bn gmm "$aligner" "$tr" "$lang" "exp/$rung" "exp/${rung}_ali" --nj "$nj" --cache
    prev=$rung
    [ "$rung" != "$last" ] || break
  done
fi

if [ "$stage" -le 2 ]; then
  log "Stage 2: graphs ($graphs: asr-bn mkgraph [--lm]), GMM likelihoods and lattices of dev and test"
  for sys in mono tri1 tri2b tri3b; do  # up to --last
    [ -f "$exp/$sys/final.mdl" ] || continue
    for g in $graphs; do
      out=decode/$sys
      rm -rf "$out/graph_$g" "$out/decode_dev_$g"* "$out/decode_test_$g"*
      lm_opt=
      [ "$g" = tg ] && lm_opt="--lm $arpa"
      asr-bn mkgraph "$lang" "$exp/$sys" "$out/graph_$g" $lm_opt
      for set in dev test; do
        dir=$out/decode_${set}_$g
        if [ "$sys" = tri3b ]; then  # two passes with fMLLR, decode_fmllr.sh's defaults
          asr-bn gmm decode-fmllr "$out/graph_$g" "$feats/$set" "$exp/$sys" "$dir" --nj "$nj" --cache
          continue
        fi
        asr-bn gmm likes "$feats/$set" "$exp/$sys" "$dir"
        # Kaldi's decode.sh beams and acoustic scale (13, lattice beam 6, 1/12); the LM weight is swept when scoring
        asr-bn decode "$out/graph_$g" "$exp/$sys" "$dir/loglikes.scp" "$dir" --lattices --nj "$nj" \
          --beam 13 --lattice-beam 6 --acoustic-scale 0.083333
        rm "$dir/loglikes.ark" "$dir/loglikes.scp"
      done
    done
    [ "$sys" != "$last" ] || break
  done
fi
log "Done."
