#!/usr/bin/env bash
# Server instructions per request (or per delivered event), counted by
# callgrind: the same swetcd-bench workload twice, with SMALL and LARGE
# requests, and the difference divided by LARGE - SMALL, so start-up and
# shut-down cancel out. Deterministic where wall-clock rows are noisy: use
# it to compare two builds of the server.
# Usage: benchmarks/scripts/callgrind-per-request.sh SWETCD_BINARY put|txn|range|watch [SMALL LARGE]
#   put/txn/range: 16 clients on 4 connections, 8-byte keys, 256-byte values
#   (default 1000 11000 requests); watch: 1,000 watchers on 10 streams over
#   10 connections, 10 puts/s (default 1 101 puts; per delivered event).
# Needs valgrind and a release swetcd-bench (benchmarks/compare builds it).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
binary=${1:?swetcd binary}
workload=${2:?put, txn, range or watch}
if [ "$workload" = watch ]; then small=${3:-1}; large=${4:-101}; else small=${3:-1000}; large=${4:-11000}; fi
bench=$root/benchmarks/.build/release/swetcd-bench
case $workload in
  put) args=(put --clients 16 --conns 4 --key-space-size 100000 --key-size 8 --val-size 256); count=--total ;;
  txn) args=(txn-put --clients 16 --conns 4 --key-space-size 100000 --key-size 8 --val-size 256); count=--total ;;
  range) args=(range 00000000 --consistency s --clients 16 --conns 4); count=--total ;;
  watch) args=(watch-latency --conns 10 --streams 10 --watchers-per-stream 100 --put-rate 10); count=--put-total ;;
  *) echo "unknown workload $workload" >&2; exit 2 ;;
esac
instructions() {
  local work port server
  work=$(mktemp -d /tmp/swetcd-callgrind-XXXXXX)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  valgrind --tool=callgrind --callgrind-out-file="$work/out" "$binary" --data-dir "$work/data" \
    --listen-client-urls "http://127.0.0.1:$port" --log-level warn > "$work/log" 2>&1 &
  server=$!
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.2; done
  "$bench" "${args[@]}" --endpoints "127.0.0.1:$port" "$count" "$1" > /dev/null
  kill -INT "$server"; wait "$server" 2>/dev/null || true
  callgrind_annotate "$work/out" | grep -m1 "PROGRAM TOTALS" | awk '{gsub(",", "", $1); print $1}'
  rm -rf "$work"
}
a=$(instructions "$small")
b=$(instructions "$large")
per=$(( (b - a) / (large - small) ))
[ "$workload" = watch ] && per=$(( per / 1000 ))
echo "$workload: $per instructions per $([ "$workload" = watch ] && echo "delivered event" || echo request) ($small: $a, $large: $b)"
