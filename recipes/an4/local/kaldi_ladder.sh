#!/usr/bin/env bash
# Kaldi's own GMM ladder beside asr-bn's, on the same data, lexicon, LM and budgets (issue 12, "Checked against real
# Kaldi"): a Kaldi working dir built from an asr-bn recipe dir, then Kaldi's steps/ scripts from the bundle.
#
# Usage: recipes/an4/local/kaldi_ladder.sh [--nj N] [--stage N] [--kaldi DIR] RECIPE_DIR WORKDIR
#   RECIPE_DIR  an asr-bn recipe working dir after its stage 1 (recipes/an4/run.sh --dir ...):
#               data/{train,dev,test} (wav.scp text utt2spk spk2utt), data/lang (asr-bn lang), data/local/lm/tg.arpa.
#   WORKDIR     the Kaldi working dir to make (path.sh, cmd.sh, steps, utils, conf/mfcc.conf, data/, exp/).
#   --kaldi DIR the Kaldi bundle (default: ../shared/kaldi beside the repository).
#   --nj N      parallel jobs (default 2).
#   --stage N   start at stage N (default 0); each stage redoes its work.
# Stages:
#   0  data/{train,dev,test} copied; a Kaldi dict dir from the recipe's data/lang (its lexiconp.txt, silence and
#      nonsilence sets, optional silence; position suffixes stripped) → utils/prepare_lang.sh → data/lang, checked
#      against the recipe's data/lang (phones.txt, words.txt, topo, phones/*.int equal); data/lang_test/G.fst from
#      tg.arpa through kaldilm's arpa2fst (the call asr-bn mkgraph --lm makes) as utils/format_lm.sh does;
#      data/lang_loop/G.fst a uniform word loop
#   1  steps/make_mfcc.sh (conf/mfcc.conf: --use-energy=false, 16 kHz), steps/compute_cmvn_stats.sh
#   2  steps/train_mono.sh → exp/mono; train_deltas.sh 500 4000 → exp/tri1; train_lda_mllt.sh 500 4000 → exp/tri2b;
#      train_sat.sh 500 4000 → exp/tri3b; align_si.sh between rungs (exp/*_ali); each rung's seconds in exp/times
#   3  utils/mkgraph.sh with data/lang_test → exp/*/graph_tg; steps/decode.sh (decode_fmllr.sh for tri3b) of dev and
#      test → exp/*/decode_{dev,test}_tg (lattices; scored by recipes/an4/local/ladder_table.py); the monophone also
#      with data/lang_loop (a word loop, G as asr-bn mkgraph's) → exp/mono/decode_{dev,test}_loop
# About 4-5 minutes on 2 cores, decoding included (4.3 min measured under load). Kaldi's defaults everywhere else
# (train_mono's 1000 Gaussians, 40 iterations, ...).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/ladder_lib.sh"  # timed

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
kaldi=$repo/../shared/kaldi
nj=2
stage=0
while [ $# -gt 0 ]; do
  case $1 in
    --nj) nj=$2; shift 2 ;;
    --stage) stage=$2; shift 2 ;;
    --kaldi) kaldi=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "$0: unknown option $1 (see --help)" >&2; exit 1 ;;
    *) break ;;
  esac
done
[ $# -eq 2 ] || { echo "usage: $0 [--nj N] [--stage N] [--kaldi DIR] RECIPE_DIR WORKDIR (see --help)" >&2; exit 1; }
src=$(cd "$1" && pwd)
[ -f "$kaldi/path.sh" ] || { echo "$0: no Kaldi bundle at $kaldi (give --kaldi)" >&2; exit 1; }
for f in data/train/wav.scp data/dev/wav.scp data/test/wav.scp data/lang/lexiconp.txt data/local/lm/tg.arpa; do
  [ -f "$src/$f" ] || { echo "$0: $src/$f is missing (run the recipe's stage 1 first)" >&2; exit 1; }
done
kaldi=$(cd "$kaldi" && pwd)
mkdir -p "$2"
cd "$2"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (kaldi_ladder.sh) $*"; }

if [ "$stage" -le 0 ]; then
  log "Stage 0: Kaldi working dir, data, lang, G"
  # steps/ and utils/ as trees of links to the bundle's files; the bundle keeps git's symbolic links as small text
  # files naming their target (utils/run.pl holds "parallel/run.pl"), which become real links here
  rm -rf steps utils
  for d in steps utils; do
    cp -rs "$kaldi/egs/$d" "$d"
    find "$d" -type l | while read -r f; do
      t=$(readlink "$f")
      [ ! -x "$t" ] && [ "$(stat -c %s "$t")" -lt 200 ] || continue
      target=$(cat "$t")
      [ -e "$(dirname "$t")/$target" ] && ln -sfn "$target" "$f"
    done
  done
  printf '. %s/path.sh\nexport PATH=%s/utils:%s/steps:$PATH\n' "$kaldi" "$(pwd)" "$(pwd)" > path.sh
  echo "export train_cmd=run.pl decode_cmd=run.pl" > cmd.sh
  mkdir -p conf
  printf -- '--use-energy=false\n--sample-frequency=16000\n' > conf/mfcc.conf
  rm -rf data exp
  mkdir -p data/local/dict
  for set in train dev test; do
    mkdir -p "data/$set"
    cp "$src/data/$set"/{wav.scp,text,utt2spk,spk2utt} "data/$set/"
  done
  lang=$src/data/lang
  strip='s/_[BEIS]$//'  # word-position suffixes (prepare_lang.sh adds them back)
  [ -f "$lang/phones/word_boundary.txt" ] && pos=true || pos=false
  awk -v pos="$pos" '{ line = $1 " " $2; for (i = 3; i <= NF; i++) { p = $i; if (pos == "true") sub(/_[BEIS]$/, "", p); line = line " " p }; print line }' \
    "$lang/lexiconp.txt" > data/local/dict/lexiconp.txt
  sed "$strip" "$lang/phones/silence.txt" | awk '!seen[$0]++' > data/local/dict/silence_phones.txt
  sed "$strip" "$lang/phones/optional_silence.txt" > data/local/dict/optional_silence.txt
  # nonsilence_phones.txt: the lang's sets (phones sharing a root) that are not silence, suffixes stripped
  awk -v pos="$pos" 'NR == FNR { sil[$1] = 1; next }
    { line = ""; delete seen; for (i = 1; i <= NF; i++) { p = $i; if (pos == "true") sub(/_[BEIS]$/, "", p);
        if (!(p in seen)) { seen[p] = 1; line = line (line == "" ? "" : " ") p } }
      split(line, f, " "); if (!(f[1] in sil) && !(line in done)) { done[line] = 1; print line } }' \
    data/local/dict/silence_phones.txt "$lang/phones/sets.txt" > data/local/dict/nonsilence_phones.txt
  if [ "$pos" = true ]; then : > data/local/dict/extra_questions.txt  # prepare_lang.sh adds the position ones
  else cp "$lang/phones/extra_questions.txt" data/local/dict/extra_questions.txt; fi
  oov=$(cat "$lang/oov.txt")
  utils/prepare_lang.sh --position-dependent-phones "$pos" data/local/dict "$oov" data/local/lang_tmp data/lang \
    > data/local/prepare_lang.log 2>&1 || { tail data/local/prepare_lang.log; exit 1; }
  same=yes
  for f in phones.txt words.txt topo oov.int phones/silence.int phones/nonsilence.int phones/sets.int \
      phones/roots.int phones/extra_questions.int phones/disambig.int phones/align_lexicon.int; do
    diff -q -b "$lang/$f" "data/lang/$f" > /dev/null || { same=no; log "note: data/lang/$f differs from the recipe's $lang/$f"; }
  done
  log "Kaldi's prepare_lang.sh and asr-bn lang agree on phones, words, topology (but for spaces), sets, roots: $same"
  cp -r data/lang data/lang_test
  (. ./path.sh
   python - "$src/data/local/lm/tg.arpa" data/lang_test/words.txt data/lang_test/G.txt <<'EOF'
import sys
from asr_bn.kaldi_ext import kaldilm
arpa, words, out = sys.argv[1:]
open(out, "w", encoding="utf-8").write(kaldilm.arpa2fst(input_arpa=arpa, disambig_symbol="#0", read_symbol_table=words))
EOF
   fstcompile data/lang_test/G.txt | fstarcsort --sort_type=ilabel > data/lang_test/G.fst
   rm data/lang_test/G.txt
   utils/validate_lang.pl --skip-determinization-check data/lang_test > data/local/validate_lang.log 2>&1 ||
     { tail data/local/validate_lang.log; exit 1; }
   # data/lang_loop: a uniform word loop over the words with a non-silence pronunciation, as asr-bn mkgraph's
   cp -r data/lang data/lang_loop
   awk 'NR == FNR { sil[$1] = 1; next } { for (i = 3; i <= NF; i++) if (!($i in sil)) { print $1; next } }' \
     data/local/dict/silence_phones.txt data/local/dict/lexiconp.txt | sort -u |
     utils/sym2int.pl data/lang/words.txt | awk '{ w[NR] = $1 } END { c = log(NR + 1);
       for (i = 1; i <= NR; i++) print 0, 0, w[i], w[i], c; print 0, c }' |
     fstcompile | fstarcsort --sort_type=ilabel > data/lang_loop/G.fst)
fi

. ./path.sh
. ./cmd.sh

if [ "$stage" -le 1 ]; then
  log "Stage 1: MFCC + CMVN (steps/make_mfcc.sh, steps/compute_cmvn_stats.sh)"
  for set in train dev test; do
    steps/make_mfcc.sh --nj "$nj" --cmd "$train_cmd" "data/$set" "exp/make_mfcc/$set" mfcc
    steps/compute_cmvn_stats.sh "data/$set" "exp/make_mfcc/$set" mfcc
    utils/validate_data_dir.sh "data/$set"
  done
fi


if [ "$stage" -le 2 ]; then
  log "Stage 2: Kaldi's ladder (mono, tri1 deltas, tri2b LDA+MLLT, tri3b SAT; 500 leaves / 4000 Gaussians)"
  mkdir -p exp
  rm -f exp/times
  timed mono steps/train_mono.sh --nj "$nj" --cmd "$train_cmd" data/train data/lang exp/mono
  timed mono_ali steps/align_si.sh --nj "$nj" --cmd "$train_cmd" data/train data/lang exp/mono exp/mono_ali
  timed tri1 steps/train_deltas.sh --cmd "$train_cmd" 500 4000 data/train data/lang exp/mono_ali exp/tri1
  timed tri1_ali steps/align_si.sh --nj "$nj" --cmd "$train_cmd" data/train data/lang exp/tri1 exp/tri1_ali
  # ±3 frames as egs/wsj/s5/run.sh passes them (and asr-bn gmm lda-mllt uses); the script's own default is
  # splice-feats' ±4
  timed tri2b steps/train_lda_mllt.sh --cmd "$train_cmd" --splice-opts "--left-context=3 --right-context=3" \
    500 4000 data/train data/lang exp/tri1_ali exp/tri2b
  timed tri2b_ali steps/align_si.sh --nj "$nj" --cmd "$train_cmd" data/train data/lang exp/tri2b exp/tri2b_ali
  timed tri3b steps/train_sat.sh --cmd "$train_cmd" 500 4000 data/train data/lang exp/tri2b_ali exp/tri3b
fi

if [ "$stage" -le 3 ]; then
  log "Stage 3: graphs with the trigram and decoding of dev and test"
  utils/mkgraph.sh data/lang_loop exp/mono exp/mono/graph_loop
  for set in dev test; do
    steps/decode.sh --nj "$nj" --cmd "$decode_cmd" --skip-scoring true exp/mono/graph_loop "data/$set" \
      "exp/mono/decode_${set}_loop"
  done
  for sys in mono tri1 tri2b tri3b; do
    utils/mkgraph.sh data/lang_test "exp/$sys" "exp/$sys/graph_tg"
    for set in dev test; do
      if [ "$sys" = tri3b ]; then
        steps/decode_fmllr.sh --nj "$nj" --cmd "$decode_cmd" --skip-scoring true "exp/$sys/graph_tg" "data/$set" \
          "exp/$sys/decode_${set}_tg"
      else
        steps/decode.sh --nj "$nj" --cmd "$decode_cmd" --skip-scoring true "exp/$sys/graph_tg" "data/$set" \
          "exp/$sys/decode_${set}_tg"
      fi
    done
  done
fi
log "Done."
