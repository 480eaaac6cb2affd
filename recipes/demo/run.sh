#!/usr/bin/env bash
# The steps of `asr-bn demo`, one CLI command each, as numbered stages (icefall style):
#   0 synth   espeak-ng corpus: data/{train,dev,test}, lang/, exp/ali_{train,dev} (Kaldi final.mdl + ali.1.gz)
#   1 prep    40 fbank + Δ + ΔΔ, speaker CMVN; train and dev get pdf targets from exp/ali_*
#   2 train   baseline (--bn none) and sequence BN (--bn sequence), same seed and budget as `asr-bn demo`
#   3 forward frame CE/FER on train and dev; log-likelihoods (priors from the model dir) of dev and test
#   4 mkgraph word-loop HCLG over the lexicon with the synth's final.mdl
#   5 decode  dev and test
#   6 score   WER, the bootstrap comparison of the two (compute-wer-bootci's), and the learning curves on one PNG
#
# Usage: recipes/demo/run.sh [--stage N] [--stop-stage N] [--seed N] [--small] [OUT_DIR]   (default OUT_DIR demo)
# e.g.   recipes/demo/run.sh --stage 2 --stop-stage 2 demo      # (re)train only
# A stage skips work whose output is complete, so a rerun continues where a killed one stopped.
set -euo pipefail

stage=0
stop_stage=6
seed=0
size=full
out=demo
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --small) size=small; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "$0: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) out=$1; shift ;;
  esac
done
echo "$0 $*: seed $seed, size $size, into $out"

# One thread per torch op, as `asr-bn demo` runs: its small matrices gain nothing from more, which only spin
# (and stall on a busy machine).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

log() { echo "$(date '+%F %T') (${BASH_SOURCE[0]##*/}:${BASH_LINENO[0]}) $*"; }
corpus=$out/corpus
models="baseline:none bn-sequence:sequence"

# The training budget and corpus size of `asr-bn demo` (asr_bn/demo.py BUDGETS), so both give the same models, and
# the CPU kernels it pins (cpu_kernel_env: ATEN_CPU_CAPABILITY=avx2 MKL_CBWR=AVX2 on x86-64, the same numbers on
# every CPU with AVX2; ATen's own choice of AVX-512 kernels changes them).
eval "$(python - "$size" <<'EOF'
import sys
from asr_bn.demo import BUDGETS, cpu_kernel_env
b = BUDGETS[sys.argv[1]]
print(f"num_speakers={b.num_speakers or ''} layers={b.layers} units={b.units} epochs={b.epochs} lr={b.lr} "
      f"batch_size={b.batch_size} optimizer={b.optimizer} momentum={b.momentum} log_every={b.log_every}")
print("".join(f"export {name}={value}\n" for name, value in cpu_kernel_env().items()))
EOF
)"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "Stage 0: synthesize the corpus into $corpus"
  if [ -f "$corpus/corpus.json" ]; then
    log "$corpus/corpus.json exists - skipping"
  else
    python - "$corpus" "$seed" "$size" "$num_speakers" <<'EOF'
import sys
from asr_bn.synth import synthesize_corpus
out, seed, size, speakers = sys.argv[1:]
paths = synthesize_corpus(out, seed=int(seed), size=size, num_speakers=int(speakers) if speakers else None)
print(f"{paths.root}: {paths.stats['total']['utterances']} utterances in {paths.seconds:.0f} s")
EOF
  fi
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "Stage 1: features (and targets) of train, dev, test"
  asr-bn prep kaldi "$corpus/data/train" "$out/prep/train" --ali-dir "$corpus/exp/ali_train"
  asr-bn prep kaldi "$corpus/data/dev" "$out/prep/dev" --ali-dir "$corpus/exp/ali_dev"
  asr-bn prep kaldi "$corpus/data/test" "$out/prep/test"
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  for m in $models; do
    name=${m%%:*} bn=${m#*:}
    exp=$out/exp/$name
    log "Stage 2: train $name (--bn $bn)"
    if [ -f "$exp/.done" ]; then
      log "$exp/.done exists - skipping"
      continue
    fi
    resume=""
    [ -f "$exp/checkpoint.pt" ] && resume=--resume
    asr-bn train "$out/prep/train" "$out/prep/dev" "$exp" $resume --bn "$bn" --layers "$layers" --units "$units" \
      --epochs "$epochs" --patience 0 --optimizer "$optimizer" --lr "$lr" --momentum "$momentum" \
      --schedule constant --batch-size "$batch_size" --max-train-frames 0 --log-every "$log_every" \
      --num-workers 0 --cache --seed "$seed" --device cpu
    touch "$exp/.done"
  done
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  for m in $models; do
    exp=$out/exp/${m%%:*}
    log "Stage 3: frame scores and log-likelihoods of $exp"
    for split in train dev; do
      if [ "$exp/frames_$split.txt" -nt "$exp/final.pt" ]; then
        cat "$exp/frames_$split.txt"
      else
        asr-bn score frames "$exp" "$out/prep/$split" > "$exp/frames_$split.tmp"
        mv "$exp/frames_$split.tmp" "$exp/frames_$split.txt" && cat "$exp/frames_$split.txt"
      fi
    done
    for split in dev test; do
      if [ "$exp/loglikes_$split.scp" -nt "$exp/final.pt" ]; then
        log "$exp/loglikes_$split.scp is newer than final.pt - skipping"
      else
        asr-bn forward "$exp" "$out/prep/$split" "ark,scp:$exp/loglikes_$split.ark,$exp/loglikes_$split.scp"
      fi
    done
  done
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  log "Stage 4: word-loop graph"
  if [ -f "$out/graph/disambig_tid.int" ]; then
    log "$out/graph exists - skipping"
  else
    asr-bn mkgraph "$corpus/lang" "$corpus/exp/ali_train" "$out/graph"
  fi
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  for m in $models; do
    exp=$out/exp/${m%%:*}
    for split in dev test; do
      log "Stage 5: decode $split with $exp"
      if [ "$exp/decode_$split/text" -nt "$exp/loglikes_$split.scp" ]; then
        log "$exp/decode_$split/text is newer than its log-likelihoods - skipping"
        continue
      fi
      asr-bn decode "$out/graph" "$corpus/exp/ali_train" "$exp/loglikes_$split.scp" "$exp/decode_$split"
    done
  done
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "Stage 6: WER and learning curves"
  for m in $models; do
    exp=$out/exp/${m%%:*}
    for split in dev test; do
      asr-bn score wer "$out/prep/$split" "$exp/decode_$split" --details "$exp/decode_$split"
    done
  done
  for split in dev test; do  # the intervals and P(BN better) that `asr-bn demo` prints
    asr-bn score wer "$out/prep/$split" "$out/exp/baseline/decode_$split/text" "$out/exp/bn-sequence/decode_$split/text" \
      --bootstrap --seed "$seed" | tail -n 4
  done
  asr-bn plot $(for m in $models; do echo "$out/exp/${m%%:*}"; done) -o "$out/learning_curves.png" \
    --labels baseline,bn-sequence
fi
