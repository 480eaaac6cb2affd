# Shared by kaldi_ladder.sh and asr_bn_ladder.sh (sourced): step timing, so both sides' exp/times read alike.
timed() {  # timed NAME CMD...: run CMD, then append "NAME SECONDS" (its wall time) to exp/times
  local name=$1 t0
  shift
  t0=$(date +%s.%N)
  "$@"
  echo "$name $(echo "$(date +%s.%N) - $t0" | bc)" >> exp/times
}
