#!/usr/bin/env bash
# Any corpus: the hybrid HMM/BN-BLSTM recipe of asr-bn from Kaldi data dirs and a dict dir, CLI commands only.
#
# Usage: recipes/any/run.sh --train DATA --test DATA --dict DICT [--dev DATA] [--lm ARPA] [options]
#   --train/--dev/--test DATA  Kaldi data dirs (wav.scp, text; utt2spk optional: without it each utterance is its own
#                   speaker).
#   --sample-frequency HZ  the audio's sampling rate (default 16000; e.g. 8000 for telephone speech: asr-bn never
#                   resamples, a mismatch stops stage 2 with the rate it found).
#                   Without --dev, --dev-speakers training speakers are held out as dev.
#   --dict DICT     Kaldi dict dir (lexicon.txt or lexiconp.txt, nonsilence_phones.txt, silence_phones.txt,
#                   optional_silence.txt, extra_questions.txt), or a bare lexicon file (phone lists derived).
#   --lm ARPA       an ARPA LM of your own over the lexicon's words: decoded as graph "lm" beside the recipe's trigram
#                   of the training transcripts (graph "tg") and a word loop ("loop").
#   --stage N / --stop-stage N   run stages N..M only (default: all); each stage skips work that is already done.
#   --dir DIR       working directory for data/ prep/ exp/ (default: the current directory).
#   --dev-speakers N  speakers held out as dev when no --dev is given (default 6; evenly spaced in sorted order).
#   --case keep|upper|lower, --strip-punctuation   transcript normalisation (changes counted and named).
#   --oov WORD      the lexicon's word for out-of-lexicon words (default <UNK>, added as `<UNK> SPN` when missing).
#   --oov-policy map|skip   transcripts with OOV words: map them to WORD (counted, named) or skip the utterance.
#   --position-dependent-phones true|false   word-position phones _B _E _I _S (Kaldi's default true).
#   --fast          CI mode: few GMM iterations and Gaussians, a tiny network trained for a few epochs, one graph.
#   --seed N        seed of both networks (default 0); a seed other than 0 trains and decodes exp/blstm_sN and
#                   exp/blstm_bn_seq_sN beside the others, and stage 8 reports every seed with their means.
#   --gmm RUNG      the GMM system whose alignments the networks learn and whose HMM the graphs use: mono
#                   (default), deltas (exp/tri1), lda-mllt (exp/tri2b) or sat (exp/tri3b); stage 3 climbs the ladder
#                   to it (asr-bn gmm deltas, lda-mllt, sat; align, align-fmllr), each rung from the last one's
#                   alignments, with --leaves/--gauss (default 500/4000; --fast: 100/400).
#   --targets T     gmm (default): the networks learn the GMM's alignments; nnet: stage 4 realigns
#                   train and dev with this seed's sequence-BN network (trained on the GMM's targets first, as
#                   Kaldi's steps/nnet/align.sh) → exp/nnet_ali*, prep/{train,dev}_nnali*, and stages 5-8 train,
#                   decode and report exp/blstm_nnali*, exp/blstm_bn_seq_nnali* beside the others; with --input
#                   fmllr the fMLLR network realigns → exp/nnet_ali_fmllr*, prep/{train,dev}_fmllr_nnali*,
#                   exp/blstm_fmllr_nnali*, exp/blstm_bn_seq_fmllr_nnali* (* = _sN for a seed N other than 0: each
#                   seed's targets in their own dirs, so seeds can run side by side); with --speed-perturb the
#                   seed's speed-perturbed network realigns the speed copies and dev → exp/nnet_ali*_sp*,
#                   prep/train_sp*_nnali*, prep/dev*_nnali*_sp, exp/blstm*_nnali_sp* (AN4's best single networks).
#   --input I       the networks' input: fbank (default: the paper's 40 log-mel + Δ+ΔΔ), fmllr (with --gmm sat:
#                   the SAT system's LDA+MLLT+fMLLR features, as Kaldi's nnet1 recipes; asr-bn gmm fmllr-feats →
#                   prep/{train,dev}_fmllr with the alignments' transforms, prep/{dev,test}_fmllr_decode with
#                   decode-fmllr's) → exp/blstm_fmllr*, exp/blstm_bn_seq_fmllr* beside the others, or fmllr-fbank
#                   (the same with each frame's fbank after its CMVN appended, fmllr-feats --append-fbank: 80 dims
#                   → prep/*_fmfb*, exp/blstm_fmfb*, exp/blstm_bn_seq_fmfb*; AN4's best input, docs/RESULTS.md).
#   --speed-perturb the networks train on Kaldi's 3-way speed perturbation of train (stage 4: asr-bn data
#                   perturb-speed → data/train_sp, 0.9/1.0/1.1; prep/train_sp aligned by the --gmm system →
#                   exp/<gmm>_ali_sp; targets, or fMLLR features, → prep/train_sp*) → exp/blstm*_sp*,
#                   exp/blstm_bn_seq*_sp* beside the others; with --targets nnet, after the same run with
#                   --targets gmm: the speed-perturbed network's targets (see --targets).
#   --nj N          parallel jobs (default 2): feature extraction, GMM training and alignment (Kaldi's split of the
#                   data, one process per part; the ali.N.gz archives), decoding.
#   --net-opts S    the networks' options instead of the recipe's (layers, units, optimizer, epochs …).
#   --cache         the networks and the GMM keep all features in memory (faster; default: read from disk each pass).
#   --ensemble S    stage 7 also decodes the frame-by-frame mean of the networks of seeds S (comma-separated,
#                   e.g. 0,1,2: each already through stage 7) with asr-bn decode --average-with → exp/<model>*_ens0_1_2,
#                   a row of stage 8's table (AN4's best system is its three seeds' ensemble, docs/RESULTS.md).
#   --train-opts S  extra `asr-bn train` options for both networks, after the recipe's own (so they win),
#                   e.g. --train-opts "--epochs 30 --device cuda".
#   --mmi           stage 6 goes on with sequence training (Kaldi nnet1's MMI, steps/nnet/make_denlats.sh +
#                   train_mpe.sh --do-smbr false): the sequence-BN network's denominator lattices of its training
#                   data on a unigram graph of the training text (asr-bn lm --order 1 → $sys/graph_ug; asr-bn decode
#                   --lattices → exp/denlats*), then asr-bn train --init it --criterion mmi → exp/blstm_bn_seq_mmi*,
#                   decoded by stage 7 and reported by stage 8 ("sequence+MMI"; no gain on AN4, docs/RESULTS.md).
#   --mmi-opts S    the MMI training's options after the recipe's (default --lr 3e-5 --schedule constant --epochs 2).
# e.g. recipes/any/run.sh --train corpus/train --test corpus/test --dict corpus/dict --dir work
#
# Stages (each a CLI command; all outputs are Kaldi formats; see README "Your own corpus"):
#   1  data, lang, LM asr-bn data copy → data/{train,dev,test} (checked, normalised, dev held out if none given);
#                     asr-bn lang → data/lang; asr-bn lm → data/local/lm/tg.arpa (trigram of data/train's text,
#                     perplexity on data/dev)
#   2  features       asr-bn prep kaldi → prep/{train,dev,test} (40 log-mel fbank, per-speaker CMVN stats)
#   3  alignments     asr-bn gmm mono (steps/train_mono.sh) → exp/mono; asr-bn gmm align (steps/align_si.sh)
#                     → exp/mono_ali (train), exp/mono_ali_dev (dev); GMM decode of test with a word loop as a
#                     sanity check of the alignment model → exp/mono/decode_test (WER in its wer file); with
#                     --gmm, the ladder up to it: exp/tri1 (deltas), exp/tri2b (lda-mllt), exp/tri3b (sat), each
#                     with its _ali and _ali_dev (align-fmllr for sat); for sat, its own WER: asr-bn gmm
#                     decode-fmllr (steps/decode_fmllr.sh) of dev and test on the trigram graph (graph_tg), LM
#                     weight chosen on dev → exp/tri3b/decode_test_tg/wer
#   4  targets        asr-bn prep kaldi --ali-dir: the alignments' pdf-ids joined to prep/train, prep/dev (pdf.scp);
#                     with --targets nnet: the sequence-BN network's forced alignments → prep/{train,dev}_nnali*
#                     (with --input fmllr: → prep/{train,dev}_fmllr_nnali*, the fMLLR features, new targets)
#                     with --input fmllr: asr-bn gmm fmllr-feats → prep/{train,dev}_fmllr (targets joined),
#                     prep/{dev,test}_fmllr_decode (the SAT decode's transforms, for stage 7's forward)
#   5  baseline       asr-bn train --bn none → exp/blstm (final.pt, priors.vec, metrics.jsonl, learning_curve.png)
#   6  sequence BN    asr-bn train --bn sequence, same seed and budget → exp/blstm_bn_seq; with --mmi, its
#                     denominator lattices (exp/denlats) and MMI training from it → exp/blstm_bn_seq_mmi
#   7  decode         asr-bn mkgraph over data/lang and the --gmm system: word loop (graph), trigram (graph_tg), --lm
#                     (graph_lm); per model: asr-bn forward of dev and test, lattice decoding, the LM weight
#                     (acoustic scale 1/LMWT) chosen on dev and applied to test, asr-bn score wer
#                     → exp/<model>/decode_test_<graph>/wer
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
dir=.
train= dev= test= dict= lm=
dev_speakers=6
case=keep
punct=--keep-punctuation
oov="<UNK>"
oov_policy=map
sample_frequency=16000
pos_dep=true
fast=false
seed=0
targets=gmm
input=fbank
sp=  # --speed-perturb: _sp, the networks' training data prep/train_sp* and their exp dirs' tag
gmm=mono
leaves=
gauss=
nj=2
net_opts=
cache=
train_opts=
ensemble=  # --ensemble: seeds, comma-separated
mmi=false
mmi_opts=

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
    --train) train=$2; shift 2 ;;
    --dev) dev=$2; shift 2 ;;
    --test) test=$2; shift 2 ;;
    --dict) dict=$2; shift 2 ;;
    --lm) lm=$2; shift 2 ;;
    --dev-speakers) dev_speakers=$2; shift 2 ;;
    --case) case=$2; shift 2 ;;
    --strip-punctuation) punct=--strip-punctuation; shift ;;
    --oov) oov=$2; shift 2 ;;
    --oov-policy) oov_policy=$2; shift 2 ;;
    --sample-frequency) sample_frequency=$2; shift 2 ;;
    --position-dependent-phones) pos_dep=$2; shift 2 ;;
    --fast) fast=true; shift ;;
    --seed) seed=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    --input) input=$2; shift 2 ;;
    --speed-perturb) sp=_sp; shift ;;
    --gmm) gmm=$2; shift 2 ;;
    --leaves) leaves=$2; shift 2 ;;
    --gauss) gauss=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    --net-opts) net_opts=$2; shift 2 ;;
    --cache) cache=--cache; shift ;;
    --train-opts) train_opts=$2; shift 2 ;;
    --ensemble) ensemble=$2; shift 2 ;;
    --mmi) mmi=true; shift ;;
    --mmi-opts) mmi_opts=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

command -v asr-bn >/dev/null || die "asr-bn is not on PATH; activate the environment where asr-bn is installed"
abspath() { (cd "$(dirname "$1")" && echo "$(pwd)/$(basename "$1")"); }
if [ "$stage" -le 1 ]; then  # the inputs are read by stage 1 only
  for pair in train:"$train" test:"$test" dict:"$dict"; do
    [ -n "${pair#*:}" ] || die "--${pair%%:*} is required (see --help)"
  done
  for d in "$train" "$test" ${dev:+"$dev"}; do
    [ -f "$d/wav.scp" ] || die "$d is not a Kaldi data dir (no wav.scp)"
  done
  [ -e "$dict" ] || die "--dict $dict does not exist (a Kaldi dict dir or a lexicon file)"
  train=$(abspath "$train") test=$(abspath "$test") dict=$(abspath "$dict")
  [ -z "$dev" ] || dev=$(abspath "$dev")
fi
[ -z "$lm" ] || { [ -f "$lm" ] || die "--lm $lm does not exist"; lm=$(abspath "$lm"); }
[ -z "$ensemble" ] || [[ $ensemble =~ ^[0-9]+(,[0-9]+)+$ ]] ||
  die "--ensemble $ensemble: give two or more seeds, comma-separated (e.g. 0,1,2)"
mkdir -p "$dir"
cd "$dir"
log "$0 $* (working in $(pwd), fast=$fast)"

fast_opt=
$fast && fast_opt=--fast

# The network of stages 5-6 (both models alike but for --bn). The paper's SGD at lr 1e-4 needs far more updates
# than a CPU can give here (AN4 is 37 updates of 24 utterances per epoch); Adam at 1e-3 with dropout converges in
# ~15 epochs. 3 x 256 cells trains in ~25 min per model on 2 CPU cores (docs/RESULTS.md) and is plenty for 104
# monophone-state targets.
if [ -z "$net_opts" ]; then
  net_opts="--layers 3 --units 256 --dropout 0.2 --optimizer adam --lr 1e-3 --batch-size 24 --epochs 15 --patience 3"
  $fast && net_opts="--layers 2 --units 64 --optimizer adam --lr 5e-3 --batch-size 4 --epochs 6 --patience 0"
fi
net_opts="$net_opts --seed $seed --num-workers 0 $cache $train_opts"
suffix=
[ "$seed" = 0 ] || suffix=_s$seed
case $targets in
  gmm|mono) tag= ;;
  nnet) tag=_nnali ;;  # prep/SET$tag$suffix: each seed's network gives its own targets
  *) die "--targets $targets is not gmm or nnet" ;;
esac
fwd=  # the networks' dev and test features for forward: prep/SET$fwd
input_tag=  # the networks' training features: prep/SET$input_tag
fmllr_opts=  # asr-bn gmm fmllr-feats' options for the input
case $input in
  fbank) ;;
  fmllr|fmllr-fbank)
    [ "$gmm" = sat ] || die "--input $input needs --gmm sat"
    input_tag=_fmllr
    [ "$input" = fmllr-fbank ] && input_tag=_fmfb fmllr_opts=--append-fbank
    tag=$input_tag$tag fwd=${input_tag}_decode ;;
  *) die "--input $input is not fbank, fmllr or fmllr-fbank" ;;
esac
nnet_ali=exp/nnet_ali$input_tag$sp$suffix  # --targets nnet: the network's alignments of train$sp (and ${nnet_ali}_dev)
data=$tag  # the networks' training data: prep/train$sp$data, prep/dev$dev_data
[ "$targets" = nnet ] && data=$tag$suffix
dev_data=$data  # dev's targets: the GMM's, or those of the network that realigned train$sp
[ "$targets" = nnet ] && dev_data=$data$sp
case $gmm in  # the ladder's rungs up to --gmm: asr-bn gmm command : exp dir
  mono) rungs= sys=exp/mono ;;
  deltas) rungs="deltas:tri1" sys=exp/tri1 ;;
  lda-mllt) rungs="deltas:tri1 lda-mllt:tri2b" sys=exp/tri2b ;;
  sat) rungs="deltas:tri1 lda-mllt:tri2b sat:tri3b" sys=exp/tri3b ;;
  *) die "--gmm $gmm is not mono, deltas, lda-mllt or sat" ;;
esac
[ -n "$leaves" ] || { leaves=500; $fast && leaves=100; }
[ -n "$gauss" ] || { gauss=4000; $fast && gauss=400; }
models="blstm$tag$sp$suffix:none blstm_bn_seq$tag$sp$suffix:sequence"  # exp dir : --bn (or mmi)
$mmi && models="$models blstm_bn_seq_mmi$tag$sp$suffix:mmi"
if [ -z "$mmi_opts" ]; then  # Kaldi's sequence training: a few epochs at a small constant rate, the last model kept
  mmi_opts="--lr 3e-5 --schedule constant --epochs 2 --patience 0"
  $fast && mmi_opts="--lr 1e-3 --schedule constant --epochs 1 --patience 0"
fi
graphs="loop:$sys/graph${lm:+ lm:$sys/graph_lm} tg:$sys/graph_tg"  # name : graph dir
decode_opts=  # asr-bn decode's defaults: beam 13, lattice beam 8 (Kaldi's steps/nnet/decode.sh)
lmwts=1:15  # LM weights tried on dev: acoustic scale 1/LMWT (BLSTMs on AN4 like 3-4; Kaldi's nnet1 sweeps 4:15)
if $fast; then  # lattices of a weak model are costly: one graph (the LM one), narrower beams
  graphs="tg:$sys/graph_tg"
  decode_opts="--beam 8 --lattice-beam 4"
  lmwts=2:8
fi

# A stage's options are written into its .done marker; a rerun with other options must not mix outputs.
check_done() {  # check_done MARKER OPTIONS: 0 when done with these options, 1 when not done, die when different
  local marker=$1 opts=$2
  [ -f "$marker" ] || return 1
  [ "$(cat "$marker")" = "$opts" ] && return 0
  die "$(dirname "$marker") was made with other options ($(cat "$marker")); remove it or use another --dir"
}

forward_set() {  # forward_set EXP SET [FEATS]: EXP/forward_SET/loglikes.{ark,scp} of prep/SET$fwd (of prep/FEATS
  local exp=$1 feats=${3:-$2$fwd} out=$1/forward_${3:-$2}  # → EXP/forward_FEATS when given), once per trained model
  if check_done "$out/.done" "$(cat "$exp/.done")"; then
    log "$out/.done exists - skipping"
  else
    mkdir -p "$out"
    asr-bn forward "$exp" "prep/$feats" "ark,scp:$out/loglikes.ark,$out/loglikes.scp"
    cat "$exp/.done" > "$out/.done"
  fi
}

decode_sets() {  # decode_sets OUT OPTS EXP...: OUT/decode_{dev,test}_GRAPH of each graph, the LM weight chosen on dev,
  local out=$1 opts=$2 entry2 name graph dir lmwt best= set  # the mean of the EXPs' forward outputs (an ensemble)
  shift 2
  local -a sources=("$@")
  for entry2 in $graphs; do
    name=${entry2%%:*} graph=${entry2#*:}
    if check_done "$out/decode_test_$name/.done" "$opts"; then
      log "$out/decode_test_$name/.done exists - skipping"
      continue
    fi
    for set in dev test; do  # dev sweeps the LM weights, test decodes with dev's best
      dir=$out/decode_${set}_$name lmwt=$lmwts
      [ "$set" = test ] && lmwt=$best:$best
      local -a extra=()
      for exp in "${sources[@]:1}"; do
        extra+=(--average-with "$exp/forward_$set/loglikes.scp")
      done
      # shellcheck disable=SC2086 # decode_opts is a list of options
      asr-bn decode "$graph" "$sys" "${sources[0]}/forward_$set/loglikes.scp" "$dir" "${extra[@]}" \
        --lattices --lmwt "$lmwt" --nj "$nj" $decode_opts
      if [ "$set" = dev ]; then
        asr-bn score wer data/dev "$dir" > "$dir/wer_sweep"
        best=$(sed -n 's/^best: .*hyp_\([0-9]*\)$/\1/p' "$dir/wer_sweep")
        [ -n "$best" ] || die "no best LM weight in $dir/wer_sweep"
        grep '^best: ' "$dir/wer_sweep" | tee "$dir/wer"  # the sweep's lines, then best: %WER …
      else
        asr-bn score wer data/test "$dir/hyp_$best" --details "$dir/details" | tee "$dir/wer"
      fi
    done
    echo "$opts" > "$out/decode_test_$name/.done"
  done
}

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: data dirs, lang, LM (data/{train,dev,test}, data/lang, data/local/lm/tg.arpa)"
  opts="train=$train dev=${dev:-hold out $dev_speakers} test=$test dict=$dict case=$case $punct oov=$oov"
  opts="$opts position-dependent=$pos_dep"
  if check_done data/.done "$opts"; then
    log "data/.done exists - skipping"
  else
    rm -rf data/train data/dev data/test data/lang data/local/lm
    norm="--case $case $punct"
    if [ -n "$dev" ]; then
      asr-bn data copy "$train" data/train $norm
      asr-bn data copy "$dev" data/dev $norm
    else
      asr-bn data copy "$train" data/train --hold-out-speakers "$dev_speakers" --held-out data/dev $norm
    fi
    asr-bn data copy "$test" data/test $norm
    asr-bn lang "$dict" data/lang --oov "$oov" --position-dependent-phones "$pos_dep"
    asr-bn lm data/train data/lang data/local/lm/tg.arpa --order 3 --heldout data/dev
    echo "$opts" > data/.done
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: features (asr-bn prep kaldi → prep/{train,dev,test})"
  for set in train dev test; do
    # prep skips a complete output with the same inputs
    asr-bn prep kaldi "data/$set" "prep/$set" --nj "$nj" --sample-frequency "$sample_frequency"
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "Stage 3: HMM-GMM alignments (exp/mono, exp/mono_ali, exp/mono_ali_dev)"
  opts="fast=$fast oov-policy=$oov_policy $(cat data/.done)"
  if check_done exp/mono/.done "$opts"; then
    log "exp/mono/.done exists - skipping training"
  else
    rm -f exp/mono_ali/.done exp/mono_ali_dev/.done exp/mono/decode_test/.done  # they depend on this model
    rm -rf exp/mono/graph exp/mono/graph_lm exp/mono/graph_tg
    asr-bn gmm mono prep/train data/lang exp/mono --nj "$nj" $fast_opt --oov-policy "$oov_policy" $cache
    echo "$opts" > exp/mono/.done
  fi
  for set in train dev; do
    ali=exp/mono_ali
    [ "$set" = dev ] && ali=exp/mono_ali_dev
    if check_done "$ali/.done" "$opts"; then
      log "$ali/.done exists - skipping"
    else
      asr-bn gmm align "prep/$set" data/lang exp/mono "$ali" --nj "$nj" --oov-policy "$oov_policy" $cache
      echo "$opts" > "$ali/.done"
    fi
  done
  if check_done exp/mono/decode_test/.done "$opts"; then
    log "exp/mono/decode_test/.done exists - skipping the GMM decode"
  else
    log "GMM decode of test (a check of the alignment model, not the system's result)"
    if ! check_done exp/mono/graph/.done " $(cat exp/mono/.done)"; then  # the word loop, stage 7's "loop" graph
      asr-bn mkgraph data/lang exp/mono exp/mono/graph
      echo " $(cat exp/mono/.done)" > exp/mono/graph/.done
    fi
    asr-bn gmm likes prep/test exp/mono exp/mono/decode_test
    asr-bn decode exp/mono/graph exp/mono exp/mono/decode_test/loglikes.scp exp/mono/decode_test
    asr-bn score wer data/test exp/mono/decode_test/text | tee exp/mono/decode_test/wer
    echo "$opts" > exp/mono/decode_test/.done
  fi
  prev=exp/mono_ali
  for rung in $rungs; do  # deltas → lda-mllt → sat, each from the previous rung's alignments
    cmd=${rung%%:*} exp=exp/${rung#*:}
    opts="$opts $cmd=$leaves/$gauss"
    if check_done "$exp/.done" "$opts"; then
      log "$exp/.done exists - skipping training"
    else
      asr-bn gmm "$cmd" "$leaves" "$gauss" prep/train data/lang "$prev" "$exp" $fast_opt --oov-policy "$oov_policy" $cache
      echo "$opts" > "$exp/.done"
    fi
    aligner=align
    [ "$cmd" = sat ] && aligner=align-fmllr
    for set in train dev; do
      ali=${exp}_ali
      [ "$set" = dev ] && ali=${exp}_ali_dev
      if check_done "$ali/.done" "$opts"; then
        log "$ali/.done exists - skipping"
      else
        asr-bn gmm "$aligner" "prep/$set" data/lang "$exp" "$ali" --nj "$nj" --oov-policy "$oov_policy" $cache
        echo "$opts" > "$ali/.done"
      fi
    done
    prev=${exp}_ali
  done
  if [ "$gmm" = sat ]; then  # the SAT system's own WER: two-pass fMLLR decoding (steps/decode_fmllr.sh)
    graph=$sys/graph_tg lm_opt="--lm data/local/lm/tg.arpa"
    if check_done "$sys/decode_test_tg/.done" "$opts"; then
      log "$sys/decode_test_tg/.done exists - skipping the SAT decode"
    else
      log "GMM decode of dev and test with $sys (two-pass fMLLR, trigram; LM weight chosen on dev)"
      # stage 7's "tg" graph; one built before asr-bn mkgraph wrote phones/silence.csl is built again
      if ! check_done "$graph/.done" "$lm_opt $(cat "$sys/.done")" || [ ! -f "$graph/phones/silence.csl" ]; then
        # shellcheck disable=SC2086 # lm_opt is one option with its value
        asr-bn mkgraph data/lang "$sys" "$graph" $lm_opt
        echo "$lm_opt $(cat "$sys/.done")" > "$graph/.done"
      fi
      asr-bn gmm decode-fmllr "$graph" prep/dev "$sys" "$sys/decode_dev_tg" --lmwt 7:17 --nj "$nj" $cache
      asr-bn score wer data/dev "$sys/decode_dev_tg" > "$sys/decode_dev_tg/wer_sweep"
      best=$(sed -n 's/^best: .*hyp_\([0-9]*\)$/\1/p' "$sys/decode_dev_tg/wer_sweep")
      [ -n "$best" ] || die "no best LM weight in $sys/decode_dev_tg/wer_sweep"
      asr-bn gmm decode-fmllr "$graph" prep/test "$sys" "$sys/decode_test_tg" --lmwt "$best:$best" --nj "$nj" $cache
      asr-bn score wer data/test "$sys/decode_test_tg/hyp_$best" | tee "$sys/decode_test_tg/wer"
      echo "$opts" > "$sys/decode_test_tg/.done"
    fi
  fi
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "Stage 4: targets (alignments joined to prep/train$sp$data, prep/dev$dev_data → pdf.scp)"
  if [ "$targets" = nnet ]; then  # realign with the sequence-BN network of this seed (log-likelihoods, GMM's HMM)
    aligner=exp/blstm_bn_seq$input_tag$sp$suffix
    [ -f "$aligner/.done" ] || die "$aligner is not trained yet (run stages 5-6 with --targets gmm first)"
    opts=$(cat "$aligner/.done")
    for set in train$sp dev; do  # train$sp: the speed copies, each with its own GMM alignment's transforms
      ali=$nnet_ali out=prep/$set$data src=${sys}_ali$sp
      [ "$set" = dev ] && ali=${nnet_ali}_dev out=prep/dev$dev_data src=${sys}_ali_dev
      if check_done "$ali/.done" "$opts"; then
        log "$ali/.done exists - skipping"
      else
        # the features the aligner learned from (fMLLR: the alignments' transforms; fbank: dev's is stage 7's)
        feats=$set$input_tag
        forward_set "$aligner" "$set" "$feats"
        asr-bn gmm align "prep/$set" data/lang "$sys" "$ali" --nj "$nj" --oov-policy "$oov_policy" \
          --loglikes "$aligner/forward_$feats/loglikes.scp"
        echo "$opts" > "$ali/.done"
      fi
      if [ "$input" != fbank ]; then  # the same fMLLR features, the network's targets joined
        if check_done "$out/.done" "$opts"; then
          log "$out/.done exists - skipping"
        else
          # shellcheck disable=SC2086 # fmllr_opts is empty or one option
          asr-bn gmm fmllr-feats "prep/$set" "$sys" "$out" --transform-dir "$src" --ali-dir "$ali" $fmllr_opts
          echo "$opts" > "$out/.done"
        fi
      else
        asr-bn prep kaldi "data/$set" "$out" --nj "$nj" --sample-frequency "$sample_frequency" --ali-dir "$ali"
      fi
    done
  elif [ "$input" != fbank ]; then  # steps/nnet/make_fmllr_feats.sh: alignments' transforms, decode-fmllr's for forward
    for out in train$input_tag:${sys}_ali dev$input_tag:${sys}_ali_dev dev${input_tag}_decode:$sys/decode_dev_tg \
      test${input_tag}_decode:$sys/decode_test_tg; do
      set=${out%%_*} src=${out#*:} out=prep/${out%%:*}
      ali_opt=
      [ "${out%_decode}" = "$out" ] && ali_opt="--ali-dir $src"
      if check_done "$out/.done" "$(cat "$sys/.done")"; then
        log "$out/.done exists - skipping"
      else
        # shellcheck disable=SC2086 # ali_opt and fmllr_opts are empty or options
        asr-bn gmm fmllr-feats "prep/$set" "$sys" "$out" --transform-dir "$src" $ali_opt $fmllr_opts
        cat "$sys/.done" > "$out/.done"
      fi
    done
  else
    asr-bn prep kaldi data/train prep/train --nj "$nj" --sample-frequency "$sample_frequency" --ali-dir "${sys}_ali"
    asr-bn prep kaldi data/dev prep/dev --nj "$nj" --sample-frequency "$sample_frequency" --ali-dir "${sys}_ali_dev"
  fi
  if [ -n "$sp" ] && [ "$targets" = gmm ]; then  # Kaldi's 3-way speed perturbation, each copy aligned by the GMM
    opts="speed-perturb $(cat "$sys/.done")"
    if check_done "prep/train_sp$data/.done" "$opts"; then
      log "prep/train_sp$data/.done exists - skipping"
    else
      aligner=align
      [ "$gmm" = sat ] && aligner=align-fmllr
      asr-bn data perturb-speed data/train data/train_sp --sample-frequency "$sample_frequency"
      asr-bn prep kaldi data/train_sp prep/train_sp --nj "$nj" --sample-frequency "$sample_frequency"
      # shellcheck disable=SC2086 # cache is empty or one option
      asr-bn gmm "$aligner" prep/train_sp data/lang "$sys" "${sys}_ali_sp" --nj "$nj" --oov-policy "$oov_policy" $cache
      if [ "$input" != fbank ]; then
        # shellcheck disable=SC2086 # fmllr_opts is empty or one option
        asr-bn gmm fmllr-feats prep/train_sp "$sys" "prep/train_sp$input_tag" --transform-dir "${sys}_ali_sp" \
          --ali-dir "${sys}_ali_sp" $fmllr_opts
      else
        asr-bn prep kaldi data/train_sp prep/train_sp --nj "$nj" --sample-frequency "$sample_frequency" \
          --ali-dir "${sys}_ali_sp"
      fi
      echo "$opts" > "prep/train_sp$data/.done"
    fi
  fi
fi

train_net() {  # train_net EXP_DIR BN [OPTION...]: one network; an interrupted run with the same options resumes
  local exp=$1 bn=$2
  shift 2
  local opts="bn=$bn $net_opts $(cat "$sys/.done")${sp:+ speed-perturb}${*:+ $*}"
  [ "$targets" = nnet ] && opts="$opts targets=nnet:$(cat "$nnet_ali/.done")"
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
  asr-bn train "prep/train$sp$data" "prep/dev$dev_data" "$exp" --bn "$bn" $net_opts $resume "$@"
  echo "$opts" > "$exp/.done"
}

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "Stage 5: baseline BLSTM (no batch norm) → exp/blstm$tag$sp$suffix"
  train_net "exp/blstm$tag$sp$suffix" none
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "Stage 6: sequence-wise batch-normalized BLSTM (same seed and budget) → exp/blstm_bn_seq$tag$sp$suffix"
  train_net "exp/blstm_bn_seq$tag$sp$suffix" sequence
  if $mmi; then
    base=exp/blstm_bn_seq$tag$sp$suffix den=exp/denlats$tag$sp$suffix
    log "Stage 6 (--mmi): denominator lattices → $den, MMI from $base → exp/blstm_bn_seq_mmi$tag$sp$suffix"
    if ! check_done "$sys/graph_ug/.done" "$(cat "$sys/.done")"; then  # a weak LM: the lattices keep the confusions
      asr-bn lm data/train data/lang data/local/lm/ug.arpa --order 1
      asr-bn mkgraph data/lang "$sys" "$sys/graph_ug" --lm data/local/lm/ug.arpa
      cat "$sys/.done" > "$sys/graph_ug/.done"
    fi
    forward_set "$base" "train$sp" "train$sp$data"  # the training features, as the network learned them
    if check_done "$den/.done" "$(cat "$base/.done")"; then
      log "$den/.done exists - skipping"
    else
      # shellcheck disable=SC2086 # decode_opts is a list of options
      asr-bn decode "$sys/graph_ug" "$sys" "$base/forward_train$sp$data/loglikes.scp" "$den" --lattices --nj "$nj" \
        $decode_opts
      cat "$base/.done" > "$den/.done"
    fi
    # shellcheck disable=SC2086 # mmi_opts is a list of options
    train_net "exp/blstm_bn_seq_mmi$tag$sp$suffix" sequence --init "$base" --criterion mmi --denlats "$den/lat.scp" \
      --lattice-model "$sys/final.mdl" $mmi_opts
  fi
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "Stage 7: forward, decode (LM weight chosen on dev), score test"
  for entry in $graphs; do
    name=${entry%%:*} graph=${entry#*:}
    lm_opt=
    [ "$name" = lm ] && lm_opt="--lm $lm"
    [ "$name" = tg ] && lm_opt="--lm data/local/lm/tg.arpa"
    if ! check_done "$graph/.done" "$lm_opt $(cat "$sys/.done")"; then
      # shellcheck disable=SC2086 # lm_opt is empty or one option with its value
      asr-bn mkgraph data/lang "$sys" "$graph" $lm_opt
      echo "$lm_opt $(cat "$sys/.done")" > "$graph/.done"
    fi
  done
  for entry in $models; do
    exp=exp/${entry%%:*}
    [ -f "$exp/.done" ] || die "$exp is not trained yet (run stages 5 and 6 first)"
    for set in dev test; do
      forward_set "$exp" "$set"
    done
    decode_sets "$exp" "$(cat "$exp/.done")" "$exp"
  done
  if [ -n "$ensemble" ]; then  # the seeds' mean log-likelihoods, decoded as one system
    for entry in $models; do
      kind=exp/${entry%%:*} kind=${kind%"$suffix"} members=() opts="ensemble"
      for member_seed in ${ensemble//,/ }; do
        member=$kind
        [ "$member_seed" = 0 ] || member=${kind}_s$member_seed
        [ -f "$member/forward_test/.done" ] ||
          die "$member has no forward outputs (run stages 5-7 with --seed $member_seed first, then --ensemble)"
        members+=("$member") opts="$opts $member:$(cat "$member/.done")"
      done
      out=${kind}_ens${ensemble//,/_}
      mkdir -p "$out"
      echo "${members[*]}" > "$out/members"
      decode_sets "$out" "$opts" "${members[@]}"
    done
  fi
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "Stage 8: learning curves and the results table (exp/learning_curves$tag$sp$suffix.png, exp/results.md)"
  exps=() labels=()
  for entry in $models; do
    exps+=("exp/${entry%%:*}")
    labels+=("${entry#*:}")
  done
  asr-bn plot "${exps[@]}" -o "exp/learning_curves$tag$sp$suffix.png" --labels "$(IFS=,; echo "${labels[*]}")"
  last_graph=${graphs##* } last_graph=${last_graph%%:*}
  exps=() labels=()  # the table: every seed's and target source's models that stage 7 finished
  for t in "" _nnali _fmllr _fmllr_nnali _sp _fmllr_sp _fmfb _fmfb_nnali _fmfb_sp _nnali_sp _fmllr_nnali_sp \
    _fmfb_nnali_sp; do
    for entry in blstm:none blstm_bn_seq:sequence blstm_bn_seq_mmi:sequence+MMI; do
      for exp in "exp/${entry%%:*}$t" "exp/${entry%%:*}$t"_s[0-9]* "exp/${entry%%:*}$t"_ens[0-9]*; do
        [ -f "$exp/decode_test_$last_graph/.done" ] || continue
        exps+=("$exp")
        case $t in
          _nnali) labels+=("${entry#*:} (nnet ali)") ;;
          _fmllr) labels+=("${entry#*:} (fMLLR input)") ;;
          _fmllr_nnali) labels+=("${entry#*:} (fMLLR input, nnet ali)") ;;
          _sp) labels+=("${entry#*:} (speed x3)") ;;
          _fmllr_sp) labels+=("${entry#*:} (fMLLR input, speed x3)") ;;
          _fmfb) labels+=("${entry#*:} (fMLLR+fbank input)") ;;
          _fmfb_nnali) labels+=("${entry#*:} (fMLLR+fbank input, nnet ali)") ;;
          _fmfb_sp) labels+=("${entry#*:} (fMLLR+fbank input, speed x3)") ;;
          _nnali_sp) labels+=("${entry#*:} (speed x3, nnet ali)") ;;
          _fmllr_nnali_sp) labels+=("${entry#*:} (fMLLR input, speed x3, nnet ali)") ;;
          _fmfb_nnali_sp) labels+=("${entry#*:} (fMLLR+fbank input, speed x3, nnet ali)") ;;
          *) labels+=("${entry#*:}") ;;
        esac
        [ ! -f "$exp/members" ] || { labels[-1]="${labels[-1]} ensemble"; continue; }  # no model: no frame scores
        seed_tag=${exp##*"$t"}
        for set in train dev; do  # frame scores against the targets the model learned: a seed's for network targets
          case $t in
            *_nnali_sp) learned=$set${t%_sp}${seed_tag}_sp  # dev's, realigned by the speed-perturbed network
              [ "$set" = train ] && learned=train_sp${t%_sp}$seed_tag ;;  # the speed copies' own
            *_nnali) learned=$set$t$seed_tag ;;
            *) learned=$set${t%_sp} ;;  # the GMM's (train's own for the speed copies)
          esac
          [ "$exp/frames_$set" -nt "$exp/final.pt" ] || asr-bn score frames "$exp" "prep/$learned" > "$exp/frames_$set"
        done
      done
    done
  done
  names=$(for entry in $graphs; do echo "${entry%%:*}"; done | paste -sd,)
  python "$recipe/local/report.py" "${exps[@]}" --labels "$(IFS=,; echo "${labels[*]}")" --graphs "$names" \
    | tee exp/results.md
fi

log "Done through stage $(( stop_stage < 8 ? stop_stage : 8 ))."
