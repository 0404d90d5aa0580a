"""HTTP/2 protocol violations (RFC 9113) against swetcd at argv[2], one
case per sub-command; each prints what the server answered (SETTINGS
values, the RST_STREAM or GOAWAY and its error code, or a response). The
frames are written by hand, their header blocks with h2's HPACK encoder,
so that a violation reaches the server exactly as given."""
import socket
import struct
import sys
import time

import h2.settings  # noqa: F401  (h2 brings hpack; imported to fail loudly without it)
import hpack

from h2wire import (ACK, CONTINUATION, DATA, END_HEADERS, END_STREAM, ERRORS, GOAWAY, HEADERS, PREFACE, RST_STREAM,
                    SETTINGS, WINDOW_UPDATE, frame, grpc_headers)

cmd, target = sys.argv[1], sys.argv[2]
host, port = target.rsplit(":", 1)


class Conn:
    def __init__(self, preface=PREFACE):
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.buf = b""
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.sock.sendall(preface + frame(SETTINGS, 0, 0))

    def send(self, data):
        self.sock.sendall(data)

    def headers(self, stream, headers, end_stream=True):
        block = self.encoder.encode(headers)
        self.send(frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream, block))

    def frames(self, seconds=3):
        """Frames the server sends until it closes or goes quiet."""
        deadline = time.time() + seconds
        while time.time() < deadline:
            while len(self.buf) >= 9:
                length = struct.unpack(">I", b"\0" + self.buf[:3])[0]
                if len(self.buf) < 9 + length:
                    break
                kind, flags = self.buf[3], self.buf[4]
                stream = struct.unpack(">I", self.buf[5:9])[0] & 0x7FFFFFFF
                payload = self.buf[9:9 + length]
                self.buf = self.buf[9 + length:]
                if kind == SETTINGS and not flags & ACK:
                    self.send(frame(SETTINGS, ACK, 0))
                yield kind, flags, stream, payload
            try:
                self.sock.settimeout(max(0.05, deadline - time.time()))
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return
            except ConnectionResetError:
                yield "closed", 0, 0, b""
                return
            if not chunk:
                yield "closed", 0, 0, b""
                return
            self.buf += chunk

    def outcome(self, stream=None, seconds=3):
        """The first error (GOAWAY, or RST_STREAM on `stream`), a response's
        grpc-status on `stream`, or silence."""
        for kind, flags, s, payload in self.frames(seconds):
            if kind == GOAWAY:
                return "GOAWAY " + ERRORS.get(struct.unpack(">I", payload[4:8])[0], "?")
            if kind == RST_STREAM and (stream is None or s == stream):
                return f"RST_STREAM {ERRORS.get(struct.unpack('>I', payload[:4])[0], '?')}"
            if kind == "closed":
                return "closed"
            if kind == HEADERS and s == stream:
                fields = dict(self.decoder.decode(payload))
                if "grpc-status" in fields:
                    return f"grpc-status {fields['grpc-status']}"
        return "silence"


def settings():
    c = Conn()
    for kind, flags, s, payload in c.frames(2):
        if kind == SETTINGS and not flags & ACK:
            values = {struct.unpack(">H", payload[i:i + 2])[0]: struct.unpack(">I", payload[i + 2:i + 6])[0]
                      for i in range(0, len(payload), 6)}
            return f"MAX_CONCURRENT_STREAMS {values.get(3)} MAX_HEADER_LIST_SIZE {values.get(6)}"
    return "no SETTINGS"


def answered_after(c, stream):
    """Whether the connection still serves a call after a stream's error."""
    c.headers(stream, grpc_headers(target), end_stream=False)
    c.send(frame(DATA, END_STREAM, stream, b"\0\0\0\0\0"))
    return c.outcome(stream)


if cmd == "settings":
    print(settings())
elif cmd == "bad-preface":
    print(Conn(preface=b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n").outcome())
elif cmd == "frame-too-large":
    c = Conn()
    c.headers(1, grpc_headers(target), end_stream=False)
    c.send(frame(DATA, 0, 1, b"\0" * 20000))  # SETTINGS_MAX_FRAME_SIZE is 16,384 until raised
    print(c.outcome())
elif cmd == "data-on-closed-stream":
    c = Conn()
    print(answered_after(c, 1))
    c.send(frame(DATA, 0, 1, b"\0\0\0\0\0"))
    print(c.outcome())
elif cmd == "even-stream":
    # A client's streams are odd.
    c = Conn()
    c.headers(2, grpc_headers(target))
    print(c.outcome())
elif cmd == "uppercase-header":
    c = Conn()
    c.headers(1, grpc_headers(target, extra=[("X-Upper", "v")]))
    print(c.outcome(1))
    print(answered_after(c, 3))
elif cmd == "connection-header":
    c = Conn()
    c.headers(1, grpc_headers(target, extra=[("connection", "keep-alive")]))
    print(c.outcome(1))
    print(answered_after(c, 3))
elif cmd == "window-overflow-stream":
    c = Conn()
    c.headers(1, grpc_headers(target), end_stream=False)
    c.send(frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 0x7FFFFFFF)))
    print(c.outcome(1))
    print(answered_after(c, 3))
elif cmd == "window-overflow-connection":
    c = Conn()
    c.send(frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 0x7FFFFFFF)))
    print(c.outcome())
elif cmd == "header-list-too-large":
    c = Conn()
    big = [(f"x-pad-{i}", "v" * 4000) for i in range(40)]  # ~160 KiB, in CONTINUATIONs
    block = c.encoder.encode(grpc_headers(target, extra=big))
    chunks = [block[i:i + 16000] for i in range(0, len(block), 16000)]
    c.send(frame(HEADERS, END_STREAM if len(chunks) > 1 else END_STREAM | END_HEADERS, 1, chunks[0]))
    for i, chunk in enumerate(chunks[1:]):
        c.send(frame(CONTINUATION, END_HEADERS if i == len(chunks) - 2 else 0, 1, chunk))
    print(c.outcome(1))
    print(answered_after(c, 3))
elif cmd == "endless-request":
    # A unary request that declares 1 MiB and goes on past any message the
    # server takes, never ending: refused as it arrives, nothing kept.
    c = Conn()
    c.headers(1, grpc_headers(target, path="/etcdserverpb.KV/Put"), end_stream=False)
    c.send(frame(DATA, 0, 1, b"\0" + struct.pack(">I", 1 << 20) + b"\0" * 15995))
    for _ in range(320):  # 5 MiB
        c.send(frame(DATA, 0, 1, b"\0" * 16000))
    print(c.outcome(1))
    print(answered_after(c, 3))
else:
    sys.exit(f"unknown case {cmd}")
