#!/usr/bin/env bash
# The monophone's word-loop WER and its flat start (docs/RESULTS.md): Kaldi's train_mono.sh and asr-bn's monophone,
# each started from its own equal alignment and from the other's, all decoded alike by Kaldi (mkgraph.sh with the
# word loop data/lang_loop, decode.sh) and scored by ladder_table.py's rule.
#
# Usage: recipes/an4/local/flat_start.sh RECIPE_DIR KALDI_WORKDIR OUT SEED
#   RECIPE_DIR     the asr-bn recipe dir (its data/lang); KALDI_WORKDIR: kaldi_ladder.sh's workdir after stage 3
#                  (data/, exp/mono with its training graphs fsts.*.gz, data/lang_loop)
#   OUT            made here: kaldi_ali0.txt (Kaldi's align-equal-compiled), asrbn_ali0_sSEED/ali.1.gz (asr-bn's,
#                  seed SEED) and one exp dir per system (asrbn_sSEED, asrbn_from_kaldi, kaldi_from_asrbn_sSEED), each
#                  with graph_loop and decode_{dev,test}_loop (Kaldi's own mono: KALDI_WORKDIR/exp/mono)
# Since commit 238a118 asr-bn's seed 0 draws Kaldi's own flat start (RESULTS: "asr-bn's flat start is Kaldi's"),
# so its row repeats Kaldi's start; the table in RESULTS was made with the CRC-32 seeds before it.
# About 5 minutes a seed on 2 cores. Resumable: a system already trained (asr-bn's report.json, Kaldi's final.mdl)
# or decoded (decode_test_loop/lat.1.gz) is kept, so further seeds reuse asrbn_from_kaldi.
set -euo pipefail
[ $# -eq 4 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 1; }
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
run=$(cd "$1" && pwd); K=$(cd "$2" && pwd); mkdir -p "$3"; out=$(cd "$3" && pwd); seed=$4
cd "$K"; . ./path.sh
feats="ark,s,cs:apply-cmvn --utt2spk=ark:data/train/utt2spk scp:data/train/cmvn.scp scp:data/train/feats.scp ark:- | add-deltas ark:- ark:- |"
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') (flat_start.sh) $*"; }

log "flat starts: Kaldi's align-equal-compiled, asr-bn's seed $seed"
align-equal-compiled "ark:gunzip -c exp/mono/fsts.*.gz|" "$feats" "ark,t:$out/kaldi_ali0.txt" 2> "$out/align_equal.log"
python3 "$here/flat_start.py" data/train "$run/data/lang" "$seed" "$out/asrbn_ali0_s$seed"

log "asr-bn's monophone: its own flat start (seed $seed), and Kaldi's"
[ -f "$out/asrbn_s$seed/report.json" ] ||
  asr-bn gmm mono data/train "$run/data/lang" "$out/asrbn_s$seed" --seed "$seed" > "$out/asrbn_s$seed.log" 2>&1
[ -f "$out/asrbn_from_kaldi/report.json" ] ||
  asr-bn gmm mono data/train "$run/data/lang" "$out/asrbn_from_kaldi" --first-ali "$out/kaldi_ali0.txt" \
    > "$out/asrbn_from_kaldi.log" 2>&1

log "Kaldi's train_mono.sh from asr-bn's flat start (its stage 0 on the first pass's statistics)"
d=$out/kaldi_from_asrbn_s$seed
if [ ! -f "$d/final.mdl" ]; then
  rm -rf "$d"; mkdir -p "$d"
  cp exp/mono/0.mdl exp/mono/tree exp/mono/num_jobs exp/mono/cmvn_opts exp/mono/fsts.*.gz "$d/"
  gmm-acc-stats-ali "$d/0.mdl" "$feats" "ark:gunzip -c $out/asrbn_ali0_s$seed/ali.1.gz|" "$d/0.1.acc" 2> "$d/acc0.log"
  steps/train_mono.sh --nj "$(cat exp/mono/num_jobs)" --stage 0 data/train data/lang "$d" > "$d.log" 2>&1
fi

for d in "$out/asrbn_s$seed" "$out/asrbn_from_kaldi" "$out/kaldi_from_asrbn_s$seed"; do
  [ ! -f "$d/decode_test_loop/lat.1.gz" ] || continue
  log "word-loop decoding of $d"
  cp exp/mono/cmvn_opts "$d/" 2>/dev/null || true
  utils/mkgraph.sh data/lang_loop "$d" "$d/graph_loop" > "$d/mkgraph.log" 2>&1
  for set in dev test; do
    steps/decode.sh --nj 2 --skip-scoring true "$d/graph_loop" "data/$set" "$d/decode_${set}_loop" > "$d/decode_$set.log" 2>&1
  done
done
log "done; table: python recipes/an4/local/ladder_table.py --kaldi $K --graph loop --network LABEL=$out/asrbn_s$seed ..."
