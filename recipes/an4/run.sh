#!/usr/bin/env bash
# AN4 (CMU, ~50 min of spelled letters, digits and commands, 16 kHz): the hybrid HMM/BN-BLSTM recipe of asr-bn.
#
# Usage: recipes/an4/run.sh [options] [AN4_ROOT]
#   AN4_ROOT        the AN4 distribution (etc/ and wav/); default ../shared/data/an4 beside the repository.
#                   Get it from CMU Sphinx: http://www.speech.cs.cmu.edu/databases/an4/ (an4_sphere.tar.gz: NIST
#                   .sph files, read directly) or SphinxTrain's tutorial copy (RIFF .wav).
#   --stage N / --stop-stage N   run stages N..M only (default: all); each stage skips work that is already done.
#   --dir DIR       working directory for data/ prep/ exp/ (default: the recipe folder).
#   --fast          CI mode: few GMM iterations and Gaussians, a tiny network trained for a few epochs.
#   --speakers N    keep only the first N speakers of train, dev and test (tests; default: all).
#   --seed N        seed of both networks (default 0); a seed other than 0 trains and decodes exp/blstm_sN and
#                   exp/blstm_bn_seq_sN beside the others, and stage 8 reports every seed with their means.
#   --targets T     mono (default): the networks learn the monophone GMM's alignments; nnet: stage 4 realigns
#                   train and dev with this seed's sequence-BN network (trained on mono targets first, as Kaldi's
#                   steps/nnet/align.sh) → exp/nnet_ali*, prep/{train,dev}_nnali, and stages 5-8 train, decode and
#                   report exp/blstm_nnali*, exp/blstm_bn_seq_nnali* beside the others.
#   --nj N          parallel jobs for feature extraction, archives of alignments and decoding (default 2).
#   --train-opts S  extra `asr-bn train` options for both networks, after the recipe's own (so they win),
#                   e.g. --train-opts "--epochs 30 --device cuda".
# e.g. recipes/an4/run.sh --stage 3 --stop-stage 3 ../shared/data/an4
#
# Stages (all outputs are Kaldi formats; see docs/ARCHITECTURE.md):
#   1  data prep      AN4 → data/{train,dev,test} Kaldi data dirs (6 held-out training speakers as dev) + data/lang
#   2  features       asr-bn prep kaldi → prep/{train,dev,test} (40 log-mel fbank, per-speaker CMVN stats)
#   3  alignments     monophone HMM-GMM (steps/train_mono.sh) → exp/mono; forced alignment (steps/align_si.sh)
#                     → exp/mono_ali (train), exp/mono_ali_dev (dev); GMM decode of test with a word loop as a
#                     sanity check of the alignment model → exp/mono/decode_test (WER in its wer file)
#   4  targets        asr-bn prep kaldi --ali-dir: the alignments' pdf-ids joined to prep/train, prep/dev (pdf.scp);
#                     with --targets nnet: the sequence-BN network's forced alignments → prep/{train,dev}_nnali
#   5  baseline       asr-bn train --bn none → exp/blstm (final.pt, priors.vec, metrics.jsonl, learning_curve.png)
#   6  sequence BN    asr-bn train --bn sequence, same seed and budget → exp/blstm_bn_seq
#   7  decode         graphs over data/lang: word loop (exp/mono/graph), etc/an4.lm (graph_an4lm) and a trigram of
#                     the training transcripts (asr-bn lm → graph_tg); per model: asr-bn forward of dev and
#                     test, lattice decoding, the LM weight (acoustic scale 1/LMWT) chosen on dev and applied to
#                     test, asr-bn score wer → exp/<model>/decode_test_<graph>/wer
#   8  report         asr-bn plot → exp/learning_curves.png (this seed's two models); exp/results.md: train CE,
#                     dev CE, dev FER (asr-bn score frames, against the targets each model learned) and test WER
#                     per model, seed, target source and graph (local/report.py)
# Stages 5 and 6 may run at the same time (two invocations with --stage 5 --stop-stage 5 and --stage 6
# --stop-stage 6): on a CPU-bound machine that roughly halves the wall time. An interrupted training resumes.
# On a shared CPU, OMP_NUM_THREADS=1 keeps torch's per-op threads from stalling: the recurrent steps' small
# matrices gain nothing from them (docs/RESULTS.md, Demo, "Threads").
set -euo pipefail

recipe=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
stage=1
stop_stage=100
dir=$recipe
fast=false
speakers=
seed=0
targets=mono
nj=2
train_opts=
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
    --seed) seed=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    --train-opts) train_opts=$2; shift 2 ;;
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

# The network of stages 5-6 (both models alike but for --bn). The paper's SGD at lr 1e-4 needs far more updates
# than a CPU can give here (AN4 is 37 updates of 24 utterances per epoch); Adam at 1e-3 with dropout converges in
# ~15 epochs. 3 x 256 cells trains in ~25 min per model on 2 CPU cores (docs/RESULTS.md) and is plenty for 104
# monophone-state targets.
net_opts="--layers 3 --units 256 --dropout 0.2 --optimizer adam --lr 1e-3 --batch-size 24 --epochs 15 --patience 3"
$fast && net_opts="--layers 2 --units 64 --optimizer adam --lr 5e-3 --batch-size 4 --epochs 6 --patience 0"
net_opts="$net_opts --seed $seed --num-workers 0 --cache $train_opts"
suffix=
[ "$seed" = 0 ] || suffix=_s$seed
case $targets in
  mono) tag= ;;
  nnet) tag=_nnali ;;
  *) die "--targets $targets is not mono or nnet" ;;
esac
models="blstm$tag$suffix:none blstm_bn_seq$tag$suffix:sequence"  # exp dir : --bn
graphs="loop:exp/mono/graph an4lm:exp/mono/graph_an4lm tg:exp/mono/graph_tg"  # name : graph dir
decode_opts=  # asr-bn decode's defaults: beam 13, lattice beam 8 (Kaldi's steps/nnet/decode.sh)
lmwts=1:15  # LM weights tried on dev: acoustic scale 1/LMWT (AN4's BLSTMs like 3-4; Kaldi's nnet1 sweeps 4:15)
if $fast; then  # lattices of a weak model are costly: one graph (the LM one), narrower beams
  graphs="tg:exp/mono/graph_tg"
  decode_opts="--beam 8 --lattice-beam 4"
fi

# A stage's options are written into its .done marker; a rerun with other options must not mix outputs.
check_done() {  # check_done MARKER OPTIONS: 0 when done with these options, 1 when not done, die when different
  local marker=$1 opts=$2
  [ -f "$marker" ] || return 1
  [ "$(cat "$marker")" = "$opts" ] && return 0
  die "$(dirname "$marker") was made with other options ($(cat "$marker")); remove it or use another --dir"
}

forward_set() {  # forward_set EXP SET: EXP/forward_SET/loglikes.{ark,scp} of prep/SET, once per trained model
  local exp=$1 set=$2 out=$1/forward_$2
  if check_done "$out/.done" "$(cat "$exp/.done")"; then
    log "$out/.done exists - skipping"
  else
    mkdir -p "$out"
    asr-bn forward "$exp" "prep/$set" "ark,scp:$out/loglikes.ark,$out/loglikes.scp"
    cat "$exp/.done" > "$out/.done"
  fi
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
    rm -rf exp/mono/graph exp/mono/graph_an4lm exp/mono/graph_tg
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

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "Stage 4: targets (alignments joined to prep/train$tag, prep/dev$tag → pdf.scp)"
  if [ "$targets" = nnet ]; then  # realign with the sequence-BN network of this seed (log-likelihoods, GMM's HMM)
    aligner=exp/blstm_bn_seq$suffix
    [ -f "$aligner/.done" ] || die "$aligner is not trained yet (run stages 5-6 with --targets mono first)"
    opts=$(cat "$aligner/.done")
    for set in train dev; do
      ali=exp/nnet_ali$suffix
      [ "$set" = dev ] && ali=exp/nnet_ali${suffix}_dev
      if check_done "$ali/.done" "$opts"; then
        log "$ali/.done exists - skipping"
      else
        forward_set "$aligner" "$set"  # dev's is stage 7's, reused
        python "$recipe/local/gmm.py" align data/lang "prep/$set" exp/mono "$ali" --nj "$nj" \
          --loglikes "$aligner/forward_$set/loglikes.scp"
        echo "$opts" > "$ali/.done"
      fi
      asr-bn prep kaldi "data/$set" "prep/${set}_nnali" --nj "$nj" --ali-dir "$ali"
    done
  else
    asr-bn prep kaldi data/train prep/train --nj "$nj" --ali-dir exp/mono_ali
    asr-bn prep kaldi data/dev prep/dev --nj "$nj" --ali-dir exp/mono_ali_dev
  fi
fi

train_net() {  # train_net EXP_DIR BN: one network; an interrupted run with the same options resumes
  local exp=$1 bn=$2
  local opts="bn=$bn $net_opts $(cat exp/mono/.done)"
  [ "$targets" = nnet ] && opts="$opts targets=nnet:$(cat "exp/nnet_ali$suffix/.done")"
  if check_done "$exp/.done" "$opts"; then
    log "$exp/.done exists - skipping"
    return
  fi
  local resume=
  if [ -f "$exp/checkpoint.pt" ] && [ -f "$exp/.started" ]; then
    [ "$(cat "$exp/.started")" = "$opts" ] ||
      die "$exp was started with other options ($(cat "$exp/.started")); remove it or use another --dir"
    log "$exp/checkpoint.pt exists - resuming"
    resume=--resume
  else
    rm -rf "$exp"
    mkdir -p "$exp"
    echo "$opts" > "$exp/.started"
  fi
  # shellcheck disable=SC2086 # net_opts is a list of options
  asr-bn train "prep/train$tag" "prep/dev$tag" "$exp" --bn "$bn" $net_opts $resume
  echo "$opts" > "$exp/.done"
}

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "Stage 5: baseline BLSTM (no batch norm) → exp/blstm$tag$suffix"
  train_net "exp/blstm$tag$suffix" none
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "Stage 6: sequence-wise batch-normalized BLSTM (same seed and budget) → exp/blstm_bn_seq$tag$suffix"
  train_net "exp/blstm_bn_seq$tag$suffix" sequence
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "Stage 7: forward, decode (LM weight chosen on dev), score test"
  if [ ! -f data/local/lm/train_3g.arpa ]; then
    asr-bn lm data/train data/local/lm/train_3g.arpa --lang data/lang --order 3 --heldout data/dev
  fi
  for entry in $graphs; do
    name=${entry%%:*} graph=${entry#*:}
    lm=
    [ "$name" = an4lm ] && lm="--lm $an4_root/etc/an4.lm"
    [ "$name" = tg ] && lm="--lm data/local/lm/train_3g.arpa"
    # shellcheck disable=SC2086 # lm is empty or one option with its value
    [ -f "$graph/HCLG.fst" ] || asr-bn mkgraph data/lang exp/mono "$graph" $lm
  done
  for entry in $models; do
    exp=exp/${entry%%:*}
    [ -f "$exp/.done" ] || die "$exp is not trained yet (run stages 5 and 6 first)"
    opts=$(cat "$exp/.done")
    for set in dev test; do
      forward_set "$exp" "$set"
    done
    for entry2 in $graphs; do
      name=${entry2%%:*} graph=${entry2#*:}
      dev_dir=$exp/decode_dev_$name test_dir=$exp/decode_test_$name
      if check_done "$test_dir/.done" "$opts"; then
        log "$test_dir/.done exists - skipping"
        continue
      fi
      # shellcheck disable=SC2086 # decode_opts is a list of options
      asr-bn decode "$graph" exp/mono "$exp/forward_dev/loglikes.scp" "$dev_dir" \
        --lattices --lmwt "$lmwts" --nj "$nj" $decode_opts
      asr-bn score wer data/dev "$dev_dir" > "$dev_dir/wer_sweep"
      best=$(sed -n 's/^best: .*hyp_\([0-9]*\)$/\1/p' "$dev_dir/wer_sweep")
      [ -n "$best" ] || die "no best LM weight in $dev_dir/wer_sweep"
      tail -n 1 "$dev_dir/wer_sweep" | tee "$dev_dir/wer"
      asr-bn decode "$graph" exp/mono "$exp/forward_test/loglikes.scp" "$test_dir" \
        --lattices --lmwt "$best:$best" --nj "$nj" $decode_opts
      asr-bn score wer data/test "$test_dir/hyp_$best" --details "$test_dir/details" | tee "$test_dir/wer"
      echo "$opts" > "$test_dir/.done"
    done
  done
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "Stage 8: learning curves and the results table (exp/learning_curves$tag$suffix.png, exp/results.md)"
  exps=() labels=()
  for entry in $models; do
    exps+=("exp/${entry%%:*}")
    labels+=("${entry#*:}")
  done
  asr-bn plot "${exps[@]}" -o "exp/learning_curves$tag$suffix.png" --labels "$(IFS=,; echo "${labels[*]}")"
  last_graph=${graphs##* } last_graph=${last_graph%%:*}
  exps=() labels=()  # the table: every seed's and target source's models that stage 7 finished
  for t in "" _nnali; do
    for entry in blstm:none blstm_bn_seq:sequence; do
      for exp in "exp/${entry%%:*}$t" "exp/${entry%%:*}$t"_s[0-9]*; do
        [ -f "$exp/decode_test_$last_graph/.done" ] || continue
        exps+=("$exp")
        labels+=("${entry#*:}${t:+ (nnet ali)}")
        for set in train dev; do  # frame scores against the targets the model learned
          [ "$exp/frames_$set" -nt "$exp/final.pt" ] || asr-bn score frames "$exp" "prep/$set$t" > "$exp/frames_$set"
        done
      done
    done
  done
  names=$(for entry in $graphs; do echo "${entry%%:*}"; done | paste -sd,)
  python "$recipe/local/report.py" "${exps[@]}" --labels "$(IFS=,; echo "${labels[*]}")" --graphs "$names" \
    | tee exp/results.md
fi

log "Done through stage $(( stop_stage < 8 ? stop_stage : 8 ))."
