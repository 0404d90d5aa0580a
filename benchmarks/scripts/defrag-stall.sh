#!/usr/bin/env bash
# One swetcd's longest put after a burst and while `etcdctl defrag` runs on
# a large database: loads GIB GiB of 8 KiB random values (256 clients);
# one client puts 256 B values for the next 15 s (the first checkpoints
# after the burst), then again for SECONDS while a defragment starts 2 s
# in. Prints each client's longest put and p99, the defragment's time, and
# the server's "finished defragmenting directory" log line (swap pause). Needs release
# builds (benchmarks/compare builds both) and etcdctl (Debian etcd-client).
# Usage: benchmarks/scripts/defrag-stall.sh GIB [SECONDS]   (default 40)
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
gib=${1:?GiB to load}
seconds=${2:-40}
bench=$root/benchmarks/.build/release/swetcd-bench
work=$(mktemp -d /tmp/swetcd-defrag-XXXXXX)
server=
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$root/.build/release/swetcd" --data-dir "$work/data" --listen-client-urls "http://127.0.0.1:$port" \
  --log-level info --quota-backend-bytes $((8 << 30)) >"$work/log" 2>&1 &
server=$!
for _ in $(seq 100); do "$bench" put --endpoints "127.0.0.1:$port" --total 1 >/dev/null 2>&1 && break; sleep 0.1; done
count=$(python3 -c "print(int($gib * 2**30 / 8192))")
"$bench" put --endpoints "127.0.0.1:$port" --clients 256 --conns 16 --total "$count" --key-space-size "$count" \
  --sequential-keys --random-values --val-size 8192 >/dev/null
"$bench" put --endpoints "127.0.0.1:$port" --clients 1 --total 100000000 --key-space-size 1000 --val-size 256 \
  --duration 15 --json >"$work/after-burst.json"
python3 -c "import json; r = json.load(open('$work/after-burst.json'))['latencyMs']; print(f\"after the burst: longest put {r['max']:.1f} ms, p99 {r['p99']:.2f} ms\")"
"$bench" put --endpoints "127.0.0.1:$port" --clients 1 --total 100000000 --key-space-size 1000 --val-size 256 \
  --duration "$seconds" --json >"$work/writer.json" &
writer=$!
sleep 2
start=$(date +%s.%N)
ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$port" --command-timeout=600s defrag >/dev/null
echo "defragment of $gib GiB took $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
wait "$writer"
python3 -c "import json; r = json.load(open('$work/writer.json'))['latencyMs']; print(f\"during the defragment: longest put {r['max']:.1f} ms, p99 {r['p99']:.2f} ms\")"
grep '"finished defragmenting directory"' "$work/log" || true
