#!/usr/bin/env bash
# The whole test suite under a sanitizer, servers and CLIs included (the
# end-to-end tests start the sanitized swetcd built next to them):
#   scripts/sanitize.sh address   AddressSanitizer (memory errors)
#   scripts/sanitize.sh thread    ThreadSanitizer (data races)
# Builds into .build-SANITIZER; each process writes its reports to a log
# directory, which is printed, and any report fails the run. Too long for
# every CI run (a build and a suite ~15 min each): `.ci/run --sanitizers`.
set -euo pipefail
kind=${1:-}
case "$kind" in address|thread) ;; *) sed -n '2,9p' "$0"; exit 2 ;; esac
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$root/.build-$kind
logs=$(mktemp -d "/tmp/swetcd-$kind-XXXXXX")
swift build --package-path "$root" --build-tests --sanitize="$kind" --scratch-path "$scratch"
# Leak checking is off: Swift keeps a weak reference's side table through a
# tagged pointer LeakSanitizer cannot follow, so every live object with a
# weak reference reads as leaked when a process exits. A small quarantine
# keeps freed memory from looking like growth to the memory-bound tests.
export ASAN_OPTIONS="detect_leaks=0:quarantine_size_mb=16:log_path=$logs/asan"
export TSAN_OPTIONS="log_path=$logs/tsan"
export SWIFT_BACKTRACE=enable=no
# Tests that bound speed or memory allow for a sanitized build (floods.py).
export SWETCD_SANITIZER=$kind
status=0
swift test --package-path "$root" --skip-build --sanitize="$kind" --scratch-path "$scratch" || status=$?
if compgen -G "$logs/*" > /dev/null; then
  cat "$logs"/*
  echo "FAILED: $kind sanitizer reports in $logs" >&2
  exit 1
fi
rm -rf "$logs"
exit $status
