#!/usr/bin/env python3
"""Watch fan-out against the number of I/O threads and the cores a member
may use: a fresh release swetcd per case, 10,000 watchers on one prefix
(100 connections of 100) fed by benchmarks/watch-sink (C, counts events by
their tags, parses nothing else) pinned to the last core, with a writer
putting --rate keys per second. Prints events delivered per second and the
server's CPU per thread (the store's loop first), per case.

    benchmarks/scripts/io-threads-scaling.py [--rate 400] [--seconds 5] [--rounds 2]
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SWETCD = os.path.join(ROOT, ".build/release/swetcd")
SINK = os.path.join(ROOT, "benchmarks/watch-sink/watch_sink")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def thread_cpu(pid):
    """Seconds of CPU per thread, keyed by thread id."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / TICK
    return out


def run_case(io_threads, cores, rate, seconds):
    work = tempfile.mkdtemp(prefix="swetcd-io-scaling-")
    port = free_port()
    server = subprocess.Popen(["taskset", "-c", cores, SWETCD, "--data-dir", os.path.join(work, "data"),
                               "--listen-client-urls", f"http://127.0.0.1:{port}",
                               "--advertise-client-urls", f"http://127.0.0.1:{port}",
                               "--experimental-io-threads", str(io_threads)],
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        before = thread_cpu(server.pid)
        last_core = str(os.cpu_count() - 1)
        sink = subprocess.run(["taskset", "-c", last_core, SINK, "127.0.0.1", str(port), "100", "100", "/sink/",
                               str(rate), str(seconds)], capture_output=True, text=True, timeout=seconds + 60)
        after = thread_cpu(server.pid)
        result = json.loads(sink.stdout)
        # The whole run's CPU (warm-up and watcher creation included), per
        # thread; the store's loop is the process's main thread.
        used = {t: after[t] - before.get(t, 0) for t in after}
        main = used.pop(server.pid, 0)
        result["cpu"] = [round(main, 2)] + sorted((round(v, 2) for v in used.values() if v >= 0.05), reverse=True)
        return result
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=400)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    if not os.path.exists(SINK):
        subprocess.run([os.path.join(ROOT, "benchmarks/watch-sink/build.sh")], check=True)
    last = os.cpu_count() - 1
    cases = [(0, "0"), (1, "0"), (2, "0"), (0, f"0-{last}"), (1, f"0-{last}"), (2, f"0-{last}")]
    print(f"10,000 watchers, {a.rate} puts/s ({a.rate * 10_000:,} events/s asked), {a.seconds:g} s; "
          f"the sink on core {last}")
    print("| I/O threads | server's cores | events/s delivered | server CPU s per thread (store's loop first) |")
    print("|---|---|---|---|")
    for r in range(a.rounds):
        for io, cores in cases:
            res = run_case(io, cores, a.rate, a.seconds)
            print(f"| {io} | {cores} | {res['eventsPerSecond']:,.0f} | {res['cpu']} |", flush=True)


if __name__ == "__main__":
    main()
