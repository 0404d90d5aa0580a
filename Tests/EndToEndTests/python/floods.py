"""Floods against swetcd (argv: case endpoint pid [ca cert key]), each while a
well-behaved gRPC client keeps writing and reading. Prints the client's
slowest call during the flood, the server's anonymous resident memory
before, during and after, and "flood ok"; exits non-zero when a call took
over a second, failed, or memory did not come back within 8 MiB.

  idle          10,000 TCP connections that send nothing
  tls-handshake 1,000 TLS connections that stop half way through the
                ClientHello (needs ca cert key; the server's port is TLS)
  rapid-reset   HTTP/2 streams opened and reset at once, for five seconds,
                on connection after connection (CVE-2023-44487)
  unread        connections that open streams of large answers and watches
                and never read a byte (the server must also grow by less
                than 96 MiB during it)
  descriptors   (argv: descriptors endpoint pid log) the server, started
                with 256 descriptors, is sent 300 connections; then its
                soft limit is cut to what it has open plus 16 and it is sent 100
                more: each time it stops accepting, says so in its log, and
                serves the connections it has; then it accepts again
"""
import os
import resource
import socket
import ssl
import struct
import sys
import threading
import time

import grpc
import hpack

from h2wire import (DATA, END_HEADERS, END_STREAM, ERRORS, GOAWAY, HEADERS, PREFACE, RST_STREAM, SETTINGS, field, frame,
                    grpc_headers, grpc_message)

case, target, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
tls_files = sys.argv[4:7] if case != "descriptors" else []
host, port = target.rsplit(":", 1)
port = int(port)
MiB = 1 << 20
# Under a sanitizer (scripts/sanitize.sh sets this) the server runs several
# times slower and its allocator keeps freed memory in quarantine: the
# bounds are for what the run looks for there (memory errors, races), not
# for speed.
SANITIZED = os.environ.get("SWETCD_SANITIZER")
LATENCY_LIMIT = 10.0 if SANITIZED else 1.0
MEMORY_SLACK = (64 if SANITIZED else 8) * MiB
# How much the server may grow during a flood that it bounds: four unread
# connections hold at most 4 MiB of answers and 1 MiB of output each, and
# their watches ~1 MiB of events (without the answer bound: ~270 MiB).
PEAK_SLACK = {"unread": (256 if SANITIZED else 96) * MiB}
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def fail(why):
    print("FAIL:", why)
    sys.stdout.flush()
    os._exit(1)


def rss():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    fail("server gone")


def channel():
    if not tls_files:
        return grpc.insecure_channel(target)
    ca, cert, key = (open(f, "rb").read() for f in tls_files)
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(ca, key, cert))


class Probe(threading.Thread):
    """The well-behaved client: a put and a read of it every 50 ms on one
    connection, and every half second a read on a new connection; keeps
    the slowest of each while `recording`."""

    def __init__(self):
        super().__init__(daemon=True)
        self.recording = False
        self.slowest = {"put": 0.0, "range": 0.0, "new-connection": 0.0}
        self.calls = 0
        self.fresh = True
        self.error = None
        self.stop = False
        self.held = channel()
        self.put = self.held.unary_unary("/etcdserverpb.KV/Put")
        self.range = self.held.unary_unary("/etcdserverpb.KV/Range")

    def timed(self, name, call):
        start = time.monotonic()
        answer = call()
        took = time.monotonic() - start
        if self.recording:
            self.slowest[name] = max(self.slowest[name], took)
            self.calls += 1
        return answer

    def run(self):
        i, fresh_at = 0, 0.0
        try:
            while not self.stop:
                value = b"v%d" % i
                self.timed("put", lambda: self.put(field(1, b"probe") + field(2, value), timeout=10))
                got = self.timed("range", lambda: self.range(field(1, b"probe"), timeout=10))
                if value not in got:
                    raise RuntimeError(f"read {got!r} after writing {value!r}")
                if self.fresh and time.monotonic() >= fresh_at:
                    fresh_at = time.monotonic() + 0.5

                    def fresh():
                        with channel() as c:
                            return c.unary_unary("/etcdserverpb.KV/Range")(field(1, b"probe"), timeout=10)
                    self.timed("new-connection", fresh)
                i += 1
                time.sleep(0.05)
        except Exception as e:  # noqa: BLE001 (any failure is the finding)
            self.error = e

    def check(self):
        if self.error:
            fail(f"the well-behaved client failed: {self.error}")

    def finish(self):
        """Stops it, says how it did, and fails if a call failed or was slow."""
        self.stop = True
        self.join(15)
        self.check()
        kinds = [k for k in self.slowest if self.fresh or k != "new-connection"]
        print(f"well-behaved client: {self.calls} calls during the flood, slowest "
              + ", ".join(f"{k} {self.slowest[k] * 1000:.0f} ms" for k in kinds))
        if self.calls < 20:
            fail("the well-behaved client made too few calls")
        slowest = max(self.slowest.values())
        if slowest > LATENCY_LIMIT:
            fail(f"a call took {slowest:.2f} s")


def settle(before, seconds=10):
    """The server's least memory over the next `seconds`, or as soon as
    it is within 8 MiB of `before`."""
    deadline, least = time.time() + seconds, rss()
    while time.time() < deadline and least > before + MEMORY_SLACK:
        time.sleep(0.25)
        least = min(least, rss())
    return least


def idle(probe):
    socks = []
    for _ in range(10000):
        socks.append(socket.create_connection((host, port), timeout=10))
    print(f"opened {len(socks)} idle connections")
    return socks


def tls_handshakes(probe):
    ctx = ssl.create_default_context(cafile=tls_files[0])
    ctx.set_alpn_protocols(["h2"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    hello = ctx.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
    try:
        hello.do_handshake()
    except ssl.SSLWantReadError:
        pass
    half = outgoing.read()
    half = half[: len(half) // 2]
    socks = []
    for _ in range(1000):
        s = socket.create_connection((host, port), timeout=10)
        s.sendall(half)
        socks.append(s)
    print(f"opened {len(socks)} half-done TLS handshakes")
    return socks


def goaway_code(sock):
    """The error code of a GOAWAY among what the server sent, if any."""
    data = b""
    try:
        sock.settimeout(0)
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    except (BlockingIOError, OSError):
        pass
    while len(data) >= 9:
        length = struct.unpack(">I", b"\0" + data[:3])[0]
        if data[3] == GOAWAY and len(data) >= 9 + 8:
            return ERRORS.get(struct.unpack(">I", data[13:17])[0], "?")
        data = data[9 + length:]
    return None


def rapid_reset(probe):
    message = grpc_message(field(1, b"probe"))
    sent, connections, codes = 0, 0, {}
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            s = socket.create_connection((host, port), timeout=5)
        except OSError:
            continue
        connections += 1
        # A fresh encoder per connection: the first block carries the
        # literals, the rest index them (as a real client's would).
        encoder = hpack.Encoder()
        s.sendall(PREFACE + frame(SETTINGS, 0, 0))
        stream = 1
        try:
            while time.time() < deadline and stream < 2 ** 31 - 200:
                burst = b""
                for _ in range(100):
                    block = encoder.encode(grpc_headers(target, "/etcdserverpb.KV/Range"))
                    burst += frame(HEADERS, END_HEADERS, stream, block)
                    burst += frame(DATA, END_STREAM, stream, message)
                    burst += frame(RST_STREAM, 0, stream, struct.pack(">I", 8))  # CANCEL
                    stream += 2
                s.sendall(burst)
                sent += 100
        except OSError:
            pass
        code = goaway_code(s)
        codes[code] = codes.get(code, 0) + 1
        s.close()
    print(f"sent {sent} streams reset at once on {connections} connections; "
          f"connections ended by GOAWAY {', '.join(f'{k}: {v}' for k, v in sorted(codes.items(), key=str))}")
    return []


big_written = False


def unread(probe):
    # 16 values of 64 KiB: every range answer is 1 MiB. (Written once: the
    # raft log the server keeps in memory holds every write, as etcd's does.)
    global big_written
    if not big_written:
        big_written = True
        with channel() as c:
            put = c.unary_unary("/etcdserverpb.KV/Put")
            for i in range(16):
                put(field(1, b"big/%02d" % i) + field(2, b"x" * 65536), timeout=10)
    socks, encoders = [], []
    everything = field(1, b"big/") + field(2, b"big0")
    for _ in range(4):
        s = socket.create_connection((host, port), timeout=10)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        encoder = hpack.Encoder()
        # A watch of ev/ that never reads the events the writes below make.
        watch = field(1, field(1, b"ev/") + field(2, b"ev0"))
        s.sendall(PREFACE + frame(SETTINGS, 0, 0)
                  + frame(HEADERS, END_HEADERS, 1, encoder.encode(grpc_headers(target, "/etcdserverpb.Watch/Watch")))
                  + frame(DATA, 0, 1, grpc_message(watch)))
        socks.append(s)
        encoders.append(encoder)
    # Then range after range on each, one every 10 ms, never read.
    for n in range(64):
        stream = 3 + 2 * n
        for s, encoder in zip(socks, encoders):
            s.sendall(frame(HEADERS, END_HEADERS, stream, encoder.encode(grpc_headers(target, "/etcdserverpb.KV/Range")))
                      + frame(DATA, END_STREAM, stream, grpc_message(everything)))
        time.sleep(0.01)
    with channel() as c:
        put = c.unary_unary("/etcdserverpb.KV/Put")
        for i in range(64):
            put(field(1, b"ev/%02d" % (i % 16)) + field(2, bytes([65 + i % 26]) * 16384), timeout=10)
    print(f"{len(socks)} connections ask for 256 answers of 1 MiB and watch 64 events of 16 KiB, and read none")
    return socks


def open_descriptors():
    return len(os.listdir(f"/proc/{pid}/fd"))


def log_has(text):
    with open(sys.argv[4]) as f:
        return text in f.read()


def descriptors():
    """Runs out of descriptors twice; exits on a failure."""
    probe = Probe()
    probe.fresh = False  # new connections wait while accepting pauses
    probe.start()
    time.sleep(1)
    probe.recording = True
    phases = [("a connection bound below the descriptor limit", 300, None,
               "client connections open, as many as the descriptor limit leaves room for"),
              ("no descriptor left", 100, 16, "accept error: Too many open files; retrying in")]
    for name, count, headroom, line in phases:
        if headroom:
            limit = open_descriptors() + headroom
            _, server_hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, server_hard))
        socks = [socket.create_connection((host, port), timeout=10) for _ in range(count)]
        time.sleep(2)
        probe.check()
        print(f"{name}: {count} connections made, the server holds {open_descriptors()} descriptors;"
              f" its log says so: {log_has(line)}")
        if not log_has(line):
            fail(f"no \"{line}\" in the log")
        for s in socks:
            s.close()
        if headroom:
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (server_hard, server_hard))
        start = time.monotonic()
        with channel() as c:
            c.unary_unary("/etcdserverpb.KV/Range")(field(1, b"probe"), timeout=10)
        print(f"then a new connection is served in {(time.monotonic() - start) * 1000:.0f} ms")
    probe.finish()
    print("descriptors ok")
    sys.exit(0)


if case == "descriptors":
    descriptors()

floods = {"idle": idle, "tls-handshake": tls_handshakes, "rapid-reset": rapid_reset, "unread": unread}
if case not in floods:
    sys.exit(f"unknown case {case}")


def round_of(flood):
    """One flood with the well-behaved client running: its slowest call,
    and the server's memory before, during and after."""
    probe = Probe()
    probe.start()
    time.sleep(1)  # its first calls, its connection made
    probe.check()
    before = rss()
    probe.recording = True
    held = flood(probe)
    time.sleep(2)
    during = rss()
    probe.check()
    for s in held:
        s.close()
    time.sleep(1)
    probe.check()
    probe.recording = False
    # The client goes on while the server settles: mimalloc hands freed
    # pages back to the kernel from the threads that allocate.
    after = settle(before)
    probe.finish()
    print(f"server memory: before {before / MiB:.1f} MiB, during {during / MiB:.1f} MiB, after {after / MiB:.1f} MiB")
    if case in PEAK_SLACK and during > before + PEAK_SLACK[case]:
        fail(f"the server grew {(during - before) / MiB:.1f} MiB during the flood")
    return before, after


# Twice: the first round grows what a server grows once (tables sized for
# that many connections, the allocator's segments); the second shows
# whether memory comes back.
round_of(floods[case])
before, after = round_of(floods[case])
if after > before + MEMORY_SLACK:
    fail("memory did not come back")
print("flood ok")
