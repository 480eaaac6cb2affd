#!/usr/bin/env bash
# AN4 (CMU, ~50 min of spelled letters, digits and commands, 16 kHz): the hybrid HMM/BN-BLSTM recipe of asr-bn.
#
# Usage: recipes/an4/run.sh [options] [AN4_ROOT]
#   AN4_ROOT        the AN4 distribution (etc/ and wav/); default ../shared/data/an4 beside the repository.
#                   Get it from CMU Sphinx: http://www.speech.cs.cmu.edu/databases/an4/ (an4_sphere.tar.gz: NIST
#                   .sph files, read directly) or SphinxTrain's tutorial copy (RIFF .wav).
#   --stage N / --stop-stage N   run stages N..M only (default: all); each stage skips work that is already done.
#   --dir DIR       working directory for data/ prep/ exp/ (default: the recipe folder).
#   --fast          CI mode: few GMM iterations and Gaussians (and, later, few network epochs).
#   --speakers N    keep only the first N speakers of train, dev and test (tests; default: all).
#   --nj N          parallel jobs for feature extraction and archives of alignments (default 2).
# e.g. recipes/an4/run.sh --stage 3 --stop-stage 3 ../shared/data/an4
#
# Stages so far (all outputs are Kaldi formats; see docs/ARCHITECTURE.md):
#   1  data prep      AN4 → data/{train,dev,test} Kaldi data dirs (6 held-out training speakers as dev) + data/lang
#   2  features       asr-bn prep kaldi → prep/{train,dev,test} (40 log-mel fbank, per-speaker CMVN stats)
#   3  alignments     monophone HMM-GMM (steps/train_mono.sh) → exp/mono; forced alignment (steps/align_si.sh)
#                     → exp/mono_ali (train), exp/mono_ali_dev (dev); GMM decode of test with a word loop as a
#                     sanity check of the alignment model → exp/mono/decode_test (WER in its wer file)
# The BN-BLSTM stages (network training, forward, decoding, scoring) are not written yet: the recipe stops here.
set -euo pipefail

recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
stage=1
stop_stage=100
dir=$recipe
fast=false
speakers=
nj=2
an4_root=$recipe/../../../shared/data/an4

log() {
  echo "$(date '+%Y-%m-%d %H:%M:%S') ($(basename "$0"):${BASH_LINENO[0]}) $*"
}
die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --fast) fast=true; shift ;;
    --speakers) speakers=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --*) die "unknown option $1 (see --help)" ;;
    *) an4_root=$1; shift ;;
  esac
done

[ -f "$an4_root/etc/an4.dic" ] || die "no AN4 at $an4_root (expected etc/an4.dic); pass AN4_ROOT (see --help)"
command -v asr-bn >/dev/null || die "asr-bn is not on PATH; activate the environment where asr-bn is installed"
an4_root=$(cd "$an4_root" && pwd)
mkdir -p "$dir"
cd "$dir"
log "$0 $* (AN4 at $an4_root, working in $dir, fast=$fast, speakers=${speakers:-all})"

fast_opt=
$fast && fast_opt=--fast
speakers_opt=
[ -n "$speakers" ] && speakers_opt="--speakers $speakers"

# A stage's options are written into its .done marker; a rerun with other options must not mix outputs.
check_done() {  # check_done MARKER OPTIONS: 0 when done with these options, 1 when not done, die when different
  local marker=$1 opts=$2
  [ -f "$marker" ] || return 1
  [ "$(cat "$marker")" = "$opts" ] && return 0
  die "$(dirname "$marker") was made with other options ($(cat "$marker")); remove it or use another --dir"
}

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: data prep (AN4 → data/train data/dev data/test data/lang)"
  opts="an4=$an4_root speakers=${speakers:-all}"
  if check_done data/.done "$opts"; then
    log "data/.done exists - skipping"
  else
    python "$recipe/local/prepare_data.py" "$an4_root" data $speakers_opt
    echo "$opts" > data/.done
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: features (asr-bn prep kaldi → prep/{train,dev,test})"
  for set in train dev test; do
    asr-bn prep kaldi "data/$set" "prep/$set" --nj "$nj"  # prep skips a complete output with the same inputs
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "Stage 3: HMM-GMM alignments (exp/mono, exp/mono_ali, exp/mono_ali_dev)"
  opts="fast=$fast $(cat data/.done)"
  if check_done exp/mono/.done "$opts"; then
    log "exp/mono/.done exists - skipping training"
  else
    rm -f exp/mono_ali/.done exp/mono_ali_dev/.done exp/mono/decode_test/.done  # they depend on this model
    rm -rf exp/mono/graph
    python "$recipe/local/gmm.py" train-mono data/lang prep/train exp/mono $fast_opt
    echo "$opts" > exp/mono/.done
  fi
  for set in train dev; do
    ali=exp/mono_ali
    [ "$set" = dev ] && ali=exp/mono_ali_dev
    if check_done "$ali/.done" "$opts"; then
      log "$ali/.done exists - skipping"
    else
      python "$recipe/local/gmm.py" align data/lang "prep/$set" exp/mono "$ali" --nj "$nj"
      echo "$opts" > "$ali/.done"
    fi
  done
  if check_done exp/mono/decode_test/.done "$opts"; then
    log "exp/mono/decode_test/.done exists - skipping the GMM decode"
  else
    log "GMM decode of test (a check of the alignment model, not the system's result)"
    [ -f exp/mono/graph/HCLG.fst ] || asr-bn mkgraph data/lang exp/mono exp/mono/graph
    python "$recipe/local/gmm.py" compute-likes prep/test exp/mono exp/mono/decode_test
    asr-bn decode exp/mono/graph exp/mono exp/mono/decode_test/loglikes.scp exp/mono/decode_test
    asr-bn score wer data/test exp/mono/decode_test/text | tee exp/mono/decode_test/wer
    echo "$opts" > exp/mono/decode_test/.done
  fi
fi

log "Done through stage $(( stop_stage < 3 ? stop_stage : 3 )) (stages 4+ — BN-BLSTM training, forward, decode, score — come later)."
