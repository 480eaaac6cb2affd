#!/usr/bin/env bash
# AN4 (CMU, ~50 min of spelled letters, digits and commands, 16 kHz): AN4's own files → Kaldi data dirs and a dict
# dir, then the generic recipe recipes/any/run.sh (stages 1-8: lang, features, GMM, targets, two networks, decode,
# report; see its --help).
#
# Usage: recipes/an4/run.sh [options] [AN4_ROOT]
#   AN4_ROOT        the AN4 distribution (etc/ and wav/); default ../shared/data/an4 beside the repository.
#                   Get it from CMU Sphinx: http://www.speech.cs.cmu.edu/databases/an4/ (an4_sphere.tar.gz: NIST
#                   .sph files, read directly) or SphinxTrain's tutorial copy (RIFF .wav).
#   --speakers N    keep only the first N speakers of train, dev and test (tests; default: all).
#   --dir DIR       working directory (default: the recipe folder): corpus/ (this prologue), data/ prep/ exp/.
#   every other option goes to recipes/any/run.sh: --stage, --stop-stage, --fast, --seed, --targets, --nj,
#   --speed-perturb, --train-opts, … (AN4 is decoded with its etc/an4.lm as graph "lm" too, position-independent
#   phones, and the networks cache their features: AN4 fits in memory).
# e.g. recipes/an4/run.sh --stage 3 --stop-stage 3 ../shared/data/an4
#
# Prologue (with stage 1): local/prepare_data.py → corpus/{train,dev,test} (6 held-out training speakers as dev,
# utterance ids <speaker>-<file id>) and corpus/dict (an4.dic, an4.phone); corpus/prepare_data.json names skips.
set -euo pipefail

recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dir=$recipe
speakers=
stage=1
an4_root=$recipe/../../../shared/data/an4
pass=()

die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
}

while [ $# -gt 0 ]; do
  case $1 in
    --speakers) speakers=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --stage) stage=$2; pass+=("$1" "$2"); shift 2 ;;
    --fast|--cache|--strip-punctuation|--speed-perturb) pass+=("$1"); shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --*) [ $# -ge 2 ] || die "option $1 needs a value"; pass+=("$1" "$2"); shift 2 ;;
    *) an4_root=$1; shift ;;
  esac
done

[ -f "$an4_root/etc/an4.dic" ] || die "no AN4 at $an4_root (expected etc/an4.dic); pass AN4_ROOT (see --help)"
command -v asr-bn >/dev/null || die "asr-bn is not on PATH; activate the environment where asr-bn is installed"
an4_root=$(cd "$an4_root" && pwd)
mkdir -p "$dir"
cd "$dir"

opts="an4=$an4_root speakers=${speakers:-all}"
if [ "$stage" -le 1 ]; then
  if [ -f corpus/.done ] && [ "$(cat corpus/.done)" = "$opts" ]; then
    echo "corpus/.done exists - skipping AN4 data prep"
  else
    [ ! -f corpus/.done ] || [ ! -f data/.done ] ||
      die "corpus/ was made with other options ($(cat corpus/.done)); remove corpus/ data/ prep/ exp/ or use another --dir"
    python "$recipe/local/prepare_data.py" "$an4_root" corpus ${speakers:+--speakers "$speakers"}
    echo "$opts" > corpus/.done
  fi
fi
exec "$recipe/../any/run.sh" --train corpus/train --dev corpus/dev --test corpus/test --dict corpus/dict \
  --lm "$an4_root/etc/an4.lm" --position-dependent-phones false --cache --dir . "${pass[@]}"
