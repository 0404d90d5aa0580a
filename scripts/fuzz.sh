#!/usr/bin/env bash
# libFuzzer runs of swetcd's decoders (fuzz/: one executable, FUZZ_TARGET
# picks the decoder; built with -sanitize=fuzzer,address over every module).
#   scripts/fuzz.sh TARGET SECONDS   one target, from its seeds in fuzz/corpus/TARGET
#   scripts/fuzz.sh --smoke [SECONDS] every target for SECONDS each (default 3; CI),
#                                     after replaying fuzz/regressions/TARGET
#   scripts/fuzz.sh --list           the targets
# New inputs go to a temporary corpus (removed after); a crash, leak or hang
# is written to fuzz/crashes/TARGET/ and fails the run: make it a regression
# (fuzz/regressions/TARGET/, replayed by --smoke) once fixed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$root/.build-fuzz
# ASan reports a crash; Swift's backtracer on top of it only takes minutes.
export SWIFT_BACKTRACE=enable=no
bin=$scratch/debug/swetcd-fuzz

build() {
  # ld.gold warns about ASan's local symbols on every link; nothing else is hidden.
  local status
  swift build --package-path "$root/fuzz" -Xswiftc -sanitize=fuzzer,address --scratch-path "$scratch" 2>&1 \
    | grep -v "Cannot export local symbol"; status=${PIPESTATUS[0]}
  [ "$status" -eq 0 ] && [ -x "$bin" ] || { echo "fuzz build failed" >&2; exit 1; }
}

run() {
  local target=$1 seconds=$2 work log
  work=$(mktemp -d "/tmp/swetcd-fuzz-$target-XXXXXX")
  log=$work/log
  mkdir -p "$root/fuzz/crashes/$target" "$work/corpus"
  if [ -d "$root/fuzz/regressions/$target" ]; then
    FUZZ_TARGET=$target "$bin" -runs=0 "$root/fuzz/regressions/$target" > "$log" 2>&1 \
      || { cat "$log"; echo "FAILED: $target regression inputs" >&2; rm -rf "$work"; return 1; }
  fi
  if FUZZ_TARGET=$target "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$root/fuzz/crashes/$target/" "$work/corpus" "$root/fuzz/corpus/$target" > "$log" 2>&1 <<< "" ; then
    local runs
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    echo "$target: $runs runs in $seconds s, no crash"
    rm -rf "$work"
  else
    tail -40 "$log"
    echo "FAILED: $target (input in fuzz/crashes/$target/)" >&2
    rm -rf "$work"
    return 1
  fi
}

case "${1:-}" in
  --list) build > /dev/null || exit 1; FUZZ_LIST=1 "$bin" ;;
  --smoke)
    build
    mapfile -t targets < <(FUZZ_LIST=1 "$bin")
    failed=0
    for t in "${targets[@]}"; do run "$t" "${2:-3}" || failed=1; done
    exit $failed ;;
  "") sed -n '2,10p' "$0"; exit 2 ;;
  *)
    build
    run "$1" "${2:?seconds}" ;;
esac
