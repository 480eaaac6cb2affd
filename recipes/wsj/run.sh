#!/usr/bin/env bash
# WSJ (Kaldi's egs/wsj/s5): the paper's experiment. A BLSTM acoustic model trained on Kaldi's tri4b alignments,
# without and with batch normalization of W·x (Laurent et al., ICASSP 2016, Table 1), decoded with Kaldi's tri4b
# graph, with or without Kaldi's binaries.
#
# Usage: recipes/wsj/run.sh [options] KALDI_S5_DIR [OUT_DIR]
#   KALDI_S5_DIR  Kaldi's egs/wsj/s5 after its run.sh made data/{train_si284,test_dev93,test_eval92},
#                 exp/tri4b_ali_si284, exp/tri4b/final.mdl and exp/tri4b/graph_tgpr (only read, never written).
#   OUT_DIR       where prep/, exp/, report.md and learning_curves.png go (default: ./wsj).
#   Options: every variable of the defaults block below, as --name VALUE (e.g. --stop-stage 3, --bn-modes
#   "sequence frame", --train-opts "--device cuda --amp bf16"). Values are split on spaces, as in Kaldi's scripts.
# e.g. recipes/wsj/run.sh --nj 8 --train-opts "--device cuda" ~/kaldi/egs/wsj/s5 exp_wsj
#
# Stages (each skips work that is already done, and resumes an interrupted training run):
#   1  features, targets  asr-bn prep wsj → OUT_DIR/prep/<set>: 40 log-mel fbank, speaker CMVN, pdf targets from
#                         exp/tri4b_ali_si284 (train) and exp/tri4b_ali_dev93 (dev)
#   2  baseline           asr-bn train --preset paper --bn none → OUT_DIR/exp/blstm
#   3  batch norm         asr-bn train --preset paper --bn sequence (and frame, with --bn-modes "sequence frame"),
#                         same seed → OUT_DIR/exp/blstm_bn_<mode>
#   4  decode             each model on each test set, graph exp/tri4b/graph_tgpr, acoustic scale 0.1:
#                         with Kaldi: asr-bn forward | latgen-faster-mapped, then steps/score_kaldi.sh
#                                     → exp/<model>/decode_tgpr_<set>_kaldi (lat.1.gz, scoring_kaldi/best_wer)
#                         without:    asr-bn forward | asr-bn decode, then asr-bn score wer
#                                     → exp/<model>/decode_tgpr_<set> (text or hyp_LMWT, wer)
#   5  report             asr-bn score frames (train and dev CE, FER of each model's best checkpoint) and the WERs
#                         → OUT_DIR/report.md (the paper's table); asr-bn plot → OUT_DIR/learning_curves.png
#
# Dev alignments: the paper's dev CE and FER (which also pick the best checkpoint) need Kaldi alignments of
# test_dev93, which Kaldi's WSJ run.sh does not make. Make them once in KALDI_S5_DIR:
#   steps/align_fmllr.sh --nj 8 --cmd run.pl data/test_dev93 data/lang exp/tri4b exp/tri4b_ali_dev93
set -euo pipefail

# ---- defaults: each is an option (--stop-stage 3 sets stop_stage) --------------------------------------------
stage=1
stop_stage=5
nj=4                   # threads loading audio (stage 1) and decoding processes (stage 4)
# Kaldi's names under KALDI_S5_DIR
train_set=train_si284
dev_set=test_dev93
test_sets="test_dev93 test_eval92"
train_ali=exp/tri4b_ali_si284
dev_ali=exp/tri4b_ali_dev93
gmm=exp/tri4b          # its final.mdl maps pdf-ids to the graph's transition-ids
graph=graph_tgpr       # $gmm/$graph/{HCLG.fst,words.txt} (Kaldi: utils/mkgraph.sh data/lang_test_tgpr exp/tri4b …)
prep_opts=""           # more `asr-bn prep wsj` options, e.g. "--sph2pipe PATH" or "--compress"
# training: the paper's setting (5 x 250 BLSTM, SGD lr 1e-4 momentum 0.9, 24 utterances a batch, <= 1300 frames)
preset=paper
bn_modes=sequence      # BN runs of stage 3; "sequence frame" adds frame-wise statistics
seed=0                 # one seed for all runs: they differ by their batch norm only
layers=                # empty: the preset's (5)
units=                 # empty: the preset's (250)
epochs=                # empty: asr-bn train's default
train_opts=""          # more `asr-bn train` options, e.g. "--device cuda --amp bf16" or "--nproc 4"
# decoding (Kaldi's steps/nnet/decode.sh defaults) and scoring (steps/score_kaldi.sh's LM-weight sweep)
decoder=auto           # auto: Kaldi's latgen-faster-mapped when found, else asr-bn decode; kaldi; asr-bn; both
acwt=0.1
beam=13.0
lattice_beam=8.0
max_active=7000
lmwt=9:20              # LM weights scored from lattices; empty: asr-bn decodes one-best at 1/acwt
forward_opts=""        # more `asr-bn forward` options, e.g. "--device cuda"
frames_opts=""         # more `asr-bn score frames` options (stage 5), e.g. "--device cuda"
score_ignore=""        # non-scored words (Kaldi's WSJ scoring has none), e.g. "<NOISE>,<SPOKEN_NOISE>"
# ----------------------------------------------------------------------------------------------------------------

log() {
  echo "$(date '+%Y-%m-%d %H:%M:%S') ($(basename "$0"):${BASH_LINENO[0]}) $*"
}
die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 1
}
usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

cmdline="$0 $*"
options=$(sed -n '/^# ---- defaults/,/^# -----------/p' "$0" | grep -oE '^[a-z_]+=' | tr -d '=' | xargs)
# Options: --name VALUE for each variable of the defaults block (Kaldi's utils/parse_options.sh convention).
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --*=*) name=${1%%=*}; value=${1#*=}; shift ;;
    --*) [ $# -ge 2 ] || die "option $1 needs a value (see --help)"; name=$1; value=$2; shift 2 ;;
    *) break ;;
  esac
  name=${name#--}
  name=${name//-/_}
  case " $options " in
    *" $name "*) printf -v "$name" '%s' "$value" ;;
    *) die "unknown option --${name//_/-} (see --help)" ;;
  esac
done
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  usage >&2
  exit 2
fi
s5=$1
out=${2:-wsj}

# ---- inputs first -----------------------------------------------------------------------------------------------
runs() {  # runs N: whether stage N is in --stage..--stop-stage
  [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]
}
case $stage$stop_stage in ''|*[!0-9]*) die "--stage and --stop-stage take stage numbers (1-5)" ;; esac
case $decoder in auto|kaldi|asr-bn|both) ;; *) die "--decoder $decoder: use auto, kaldi, asr-bn or both" ;; esac
command -v asr-bn >/dev/null || die "asr-bn is not on PATH; activate the environment where asr-bn is installed"
[ -d "$s5/data" ] || die "$s5 has no data/ folder; give Kaldi's egs/wsj/s5 after its data prep (see --help)"
s5=$(cd "$s5" && pwd)
case $out in /*) ;; *) out=$PWD/$out ;; esac
prep=$out/prep
exp=$out/exp
graph_dir=$s5/$gmm/$graph
all_sets=$(echo "$train_set $dev_set $test_sets" | tr ' ' '\n' | awk 'NF && !seen[$0]++' | xargs)
models=blstm
for mode in $bn_modes; do
  case $mode in sequence|frame) models="$models blstm_bn_$mode" ;; *) die "--bn-modes: $mode is not sequence or frame" ;; esac
done

if runs 1; then
  for set in $all_sets; do
    [ -f "$s5/data/$set/wav.scp" ] || die "no $s5/data/$set/wav.scp; run Kaldi's WSJ data prep or choose other sets"
  done
  [ -d "$s5/$train_ali" ] || die "no training alignments $s5/$train_ali; Kaldi's WSJ run.sh makes them with \
steps/align_fmllr.sh data/train_si284 data/lang exp/tri4b exp/tri4b_ali_si284"
  [ -d "$s5/$dev_ali" ] || die "no dev alignments $s5/$dev_ali: the paper's dev CE/FER need them; make them in \
$s5 with: steps/align_fmllr.sh --nj 8 --cmd run.pl data/$dev_set data/lang $gmm $dev_ali (or pass --dev-ali DIR)"
fi
if runs 2 || runs 3; then
  runs 1 || [ -f "$prep/$train_set/pdf.scp" ] || die "no targets in $prep/$train_set (run stage 1 first)"
  runs 1 || [ -f "$prep/$dev_set/pdf.scp" ] || die "no targets in $prep/$dev_set (run stage 1 first)"
fi
kaldi_path() {  # prints a PATH on which latgen-faster-mapped is found, or nothing: the current PATH, then
  # $KALDI_ROOT/src, then the PATH that KALDI_S5_DIR/path.sh sets (as Kaldi's own scripts find their binaries)
  local candidates=("$PATH")
  [ -n "${KALDI_ROOT:-}" ] && candidates+=("$KALDI_ROOT/src/latbin:$KALDI_ROOT/src/bin:$PATH")
  [ -f "$s5/path.sh" ] && candidates+=("$(cd "$s5" && set +eu && . ./path.sh >/dev/null 2>&1; echo "$PATH")")
  local p
  for p in "${candidates[@]}"; do
    if [ -n "$p" ] && (PATH=$p; command -v latgen-faster-mapped >/dev/null); then
      echo "$p"
      return
    fi
  done
}

kpath=  # the PATH under which Kaldi's binaries run (stage 4), empty without Kaldi
if runs 4; then
  if [ "$decoder" != asr-bn ]; then
    kpath=$(kaldi_path)
    kaldi_missing="latgen-faster-mapped not found (not on PATH, not in \$KALDI_ROOT/src/latbin, not through \
$s5/path.sh)"
    [ -n "$kpath" ] || [ "$decoder" = auto ] || die "$kaldi_missing; install Kaldi, set KALDI_ROOT, or use --decoder asr-bn"
  fi
  for f in "$graph_dir/HCLG.fst" "$graph_dir/words.txt" "$s5/$gmm/final.mdl"; do
    [ -f "$f" ] || die "no $f: stage 4 decodes with Kaldi's $gmm graph (utils/mkgraph.sh data/lang_test_tgpr \
$gmm $graph_dir), or give --gmm/--graph"
  done
fi
if runs 4 || runs 5; then
  for model in $models; do
    made_by=3
    [ "$model" = blstm ] && made_by=2
    runs $made_by || [ -f "$exp/$model/final.pt" ] || die "no $exp/$model/final.pt: run stage $made_by first"
  done
fi
mkdir -p "$out"
log "$cmdline (Kaldi WSJ at $s5, working in $out, stages $stage..$stop_stage)"

# A step's options are written into its .done marker; a rerun with other options must not mix outputs.
check_done() {  # check_done MARKER OPTIONS: 0 when done with these options, 1 when not done, die when different
  local marker=$1 opts=$2
  [ -f "$marker" ] || return 1
  [ "$(cat "$marker")" = "$opts" ] && return 0
  die "$(dirname "$marker") was made with other options ($(cat "$marker")); remove it or use another OUT_DIR"
}

# ---- stage 1: features and targets ------------------------------------------------------------------------------
if runs 1; then
  log "Stage 1: features and targets (asr-bn prep wsj → $prep/{${all_sets// /,}})"
  # prep is idempotent itself: a set already prepared with the same inputs and options prints "already done".
  # shellcheck disable=SC2086  # option lists are split on purpose
  asr-bn prep wsj "$s5" "$prep" --sets "$(echo $all_sets | tr ' ' ',')" --nj "$nj" \
    --ali-dir "$train_set=$s5/$train_ali" --ali-dir "$dev_set=$s5/$dev_ali" $prep_opts
fi

# ---- stages 2, 3: training --------------------------------------------------------------------------------------
train_run() {  # train_run NAME BN: asr-bn train into $exp/NAME; resumes an interrupted run, skips a finished one
  local dir=$exp/$1
  local opts="--preset $preset --bn $2 --seed $seed${layers:+ --layers $layers}${units:+ --units $units}"
  opts="$opts${epochs:+ --epochs $epochs}${train_opts:+ $train_opts}"
  if check_done "$dir/.done" "$opts"; then
    log "$dir/.done exists - skipping"
    return
  fi
  local resume=
  if [ -f "$dir/checkpoint.pt" ]; then
    [ "$(cat "$dir/.started" 2>/dev/null)" = "$opts" ] || die "$dir holds a run started with other options \
($(cat "$dir/.started" 2>/dev/null || echo unknown)); remove it or use another OUT_DIR"
    resume=--resume
    log "resuming $dir from its checkpoint.pt"
  fi
  rm -f "$dir/.scored"  # a new best model invalidates stage 5's scores
  mkdir -p "$dir"
  echo "$opts" > "$dir/.started"
  # shellcheck disable=SC2086
  asr-bn train "$prep/$train_set" "$prep/$dev_set" "$dir" $opts $resume
  echo "$opts" > "$dir/.done"
}

if runs 2; then
  log "Stage 2: baseline BLSTM (asr-bn train --preset $preset --bn none → $exp/blstm)"
  train_run blstm none
fi

if runs 3; then
  log "Stage 3: batch-normalized BLSTM ($bn_modes; same seed $seed → $exp/blstm_bn_*)"
  for mode in $bn_modes; do
    train_run "blstm_bn_$mode" "$mode"
  done
fi

# ---- stage 4: decoding ------------------------------------------------------------------------------------------
decode_asr_bn() {  # decode_asr_bn MODEL SET: asr-bn forward | asr-bn decode, then asr-bn score wer
  local dir=$exp/$1/decode_${graph#graph_}_${2#test_}
  local opts="acwt=$acwt beam=$beam lattice_beam=$lattice_beam max_active=$max_active lmwt=$lmwt \
ignore=$score_ignore"
  if check_done "$dir/.done" "$opts"; then
    log "$dir/.done exists - skipping"
    return
  fi
  local search=(--beam "$beam" --max-active "$max_active")
  [ -n "$lmwt" ] && search=(--beam "$beam" --lattices --lattice-beam "$lattice_beam" --lmwt "$lmwt")
  # shellcheck disable=SC2086
  asr-bn forward "$exp/$1" "$prep/$2" ark:- $forward_opts \
    | asr-bn decode "$graph_dir" "$s5/$gmm/final.mdl" ark:- "$dir" --acoustic-scale "$acwt" --nj "$nj" "${search[@]}"
  asr-bn score wer "$s5/data/$2" "$dir" --ignore "$score_ignore" --details "$dir/wer_details" > "$dir/wer"
  grep '%WER' "$dir/wer" | tail -n 1  # the best over the LM weights comes last (all of them are in $dir/wer)
  echo "$opts" > "$dir/.done"
}

decode_kaldi() {  # decode_kaldi MODEL SET PATH: asr-bn forward | latgen-faster-mapped, then steps/score_kaldi.sh
  local dir=$exp/$1/decode_${graph#graph_}_${2#test_}_kaldi kpath=$3
  local opts="acwt=$acwt beam=$beam lattice_beam=$lattice_beam max_active=$max_active lmwt=$lmwt"
  if check_done "$dir/.done" "$opts"; then
    log "$dir/.done exists - skipping"
    return
  fi
  mkdir -p "$dir/log"
  # shellcheck disable=SC2086
  if ! asr-bn forward "$exp/$1" "$prep/$2" ark:- $forward_opts \
    | PATH=$kpath latgen-faster-mapped --min-active=200 --max-active="$max_active" --max-mem=50000000 \
        --beam="$beam" --lattice-beam="$lattice_beam" --acoustic-scale="$acwt" --allow-partial=true \
        --word-symbol-table="$graph_dir/words.txt" "$s5/$gmm/final.mdl" "$graph_dir/HCLG.fst" ark:- \
        "ark:|gzip -c > $dir/lat.1.gz" 2> "$dir/log/decode.1.log"; then
    tail -n 20 "$dir/log/decode.1.log" >&2
    die "asr-bn forward | latgen-faster-mapped failed for $1 on $2 (log: $dir/log/decode.1.log)"
  fi
  echo 1 > "$dir/num_jobs"
  # every binary steps/score_kaldi.sh runs (without --decode-mbr), so a partial Kaldi build is named, not crashed on
  local tool missing=()
  for tool in lattice-scale lattice-add-penalty lattice-best-path compute-wer align-text; do
    (PATH=$kpath; command -v "$tool" >/dev/null) || missing+=("$tool")
  done
  local unscored=
  [ -x "$s5/steps/score_kaldi.sh" ] || unscored="$s5/steps/score_kaldi.sh not found"
  [ ${#missing[@]} -eq 0 ] || unscored="${unscored:+$unscored; }Kaldi's ${missing[*]} not found (build Kaldi's src)"
  if [ -z "$unscored" ]; then
    local range=()
    [ -n "$lmwt" ] && range=(--min-lmwt "${lmwt%:*}" --max-lmwt "${lmwt#*:}")
    (cd "$s5" && PATH=$kpath steps/score_kaldi.sh --cmd run.pl "${range[@]}" "data/$2" "$graph_dir" "$dir")
    cat "$dir/scoring_kaldi/best_wer"
  else
    log "lattices in $dir/lat.1.gz not scored: $unscored; with them in place, score in $s5: \
steps/score_kaldi.sh data/$2 $graph_dir $dir"
  fi
  echo "$opts" > "$dir/.done"
}

if runs 4; then
  log "Stage 4: decoding ($models on $test_sets, graph $graph_dir, decoder $decoder)"
  if [ "$decoder" != asr-bn ] && [ -z "$kpath" ]; then
    log "$kaldi_missing: skipping the Kaldi decode; decoding with asr-bn decode instead (no Kaldi binaries needed)"
  fi
  for model in $models; do
    for set in $test_sets; do
      if [ -n "$kpath" ]; then
        decode_kaldi "$model" "$set" "$kpath"
      fi
      if [ "$decoder" = asr-bn ] || [ "$decoder" = both ] || [ -z "$kpath" ]; then
        decode_asr_bn "$model" "$set"
      fi
    done
  done
fi

# ---- stage 5: the paper's table ---------------------------------------------------------------------------------
if runs 5; then
  log "Stage 5: frame CE/FER of each model on $train_set and $dev_set, WERs → $out/report.md, learning_curves.png"
  for model in $models; do
    dir=$exp/$model
    if [ -f "$dir/.scored" ] && [ "$dir/.scored" -nt "$dir/final.pt" ]; then
      log "$dir/.scored exists - skipping asr-bn score frames"
      continue
    fi
    for set in $train_set $dev_set; do
      # shellcheck disable=SC2086
      asr-bn score frames "$dir" "$prep/$set" $frames_opts | tee "$dir/frames_$set"
    done
    touch "$dir/.scored"
  done
  labels=
  for model in $models; do
    case $model in blstm) label=baseline ;; *) label="BN (${model#blstm_bn_})" ;; esac
    labels=${labels:+$labels,}$label
  done
  # shellcheck disable=SC2046
  asr-bn plot $(for m in $models; do echo "$exp/$m"; done) -o "$out/learning_curves.png" --labels "$labels"
  python3 "$(dirname "${BASH_SOURCE[0]}")/local/report.py" "$out" --models "$models" --train-set "$train_set" \
    --dev-set "$dev_set" --test-sets "$test_sets" --graph "$gmm/$graph"
  log "wrote $out/report.md"
fi

log "Done: stages $stage..$stop_stage."
