#!/usr/bin/env python3
"""How long a WAL-like fdatasync waits while another process writes a large
file to the same disk and fsyncs it (what `etcdctl snapshot save` does when
its file goes to the disk the server writes its WAL on). No server is
involved: whatever this reports, any server's puts on that disk wait too.

    benchmarks/scripts/fsync-under-writeback.py [--dir DIR] [--megabytes 1400] [--seconds 12]

Appends 300-byte records to a preallocated file in DIR, fdatasync after
each, while `dd ... conv=fsync` writes MEGABYTES of random bytes to DIR;
prints the fdatasync latency's p50, p99 and maximum.
"""
import argparse
import os
import subprocess
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=os.getcwd(), help="a directory on the disk to measure (default: here)")
    ap.add_argument("--megabytes", type=int, default=1400, help="size of the large file written meanwhile")
    ap.add_argument("--seconds", type=float, default=12, help="how long to append and sync")
    a = ap.parse_args()
    log, big = os.path.join(a.dir, "fsync-probe.log"), os.path.join(a.dir, "fsync-probe.big")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.posix_fallocate(fd, 0, 64 << 20)
        os.fsync(fd)
        writer = subprocess.Popen(["dd", "if=/dev/urandom", f"of={big}", "bs=1M", f"count={a.megabytes}", "conv=fsync"],
                                  stderr=subprocess.DEVNULL)
        latencies, offset, record = [], 0, b"x" * 300
        end = time.time() + a.seconds
        while time.time() < end:
            start = time.perf_counter()
            os.pwrite(fd, record, offset)
            offset += len(record)
            os.fdatasync(fd)
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(0.0005)
        writer.wait()
    finally:
        os.close(fd)
        for path in (log, big):
            if os.path.exists(path):
                os.remove(path)
    latencies.sort()
    print(f"{len(latencies)} fdatasyncs: p50 {latencies[len(latencies) // 2]:.2f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)]:.2f} ms, max {latencies[-1]:.1f} ms")


if __name__ == "__main__":
    main()
