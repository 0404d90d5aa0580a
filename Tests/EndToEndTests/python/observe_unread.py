"""An Observe call whose client stops reading (argv[1] is the endpoint):
opened by hand on a connection with a small receive buffer, it is left
unread while a candidate's key is put 24 times with 256 KiB values; then
it is read to its end. Prints how the stream ended and how many leader
messages came first."""
import socket
import struct
import sys
import time

import grpc
import hpack

from h2wire import (ACK, DATA, END_HEADERS, END_STREAM, HEADERS, PREFACE, RST_STREAM, SETTINGS, WINDOW_UPDATE, field, frame,
                    grpc_headers, grpc_message)

target = sys.argv[1]
host, port = target.rsplit(":", 1)
PUTS, VALUE = 24, 256 * 1024


sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
sock.settimeout(10)
sock.connect((host, int(port)))
encoder, decoder = hpack.Encoder(), hpack.Decoder()
sock.sendall(PREFACE + frame(SETTINGS, 0, 0)
             + frame(HEADERS, END_HEADERS, 1, encoder.encode(grpc_headers(target, "/v3electionpb.Election/Observe")))
             + frame(DATA, END_STREAM, 1, grpc_message(field(1, b"obs"))))
with grpc.insecure_channel(target) as channel:
    put = channel.unary_unary("/etcdserverpb.KV/Put")
    for i in range(PUTS):
        put(field(1, b"obs/1") + field(2, bytes([65 + i % 26]) * VALUE), timeout=10)

# Now read everything, granting flow-control credit for each DATA frame.
buf, data, messages, ended = b"", b"", 0, None
deadline = time.time() + 10
while ended is None and time.time() < deadline:
    while len(buf) >= 9 and ended is None:
        length = struct.unpack(">I", b"\0" + buf[:3])[0]
        if len(buf) < 9 + length:
            break
        kind, flags, stream = buf[3], buf[4], struct.unpack(">I", buf[5:9])[0] & 0x7FFFFFFF
        payload, buf = buf[9:9 + length], buf[9 + length:]
        if kind == SETTINGS and not flags & ACK:
            sock.sendall(frame(SETTINGS, ACK, 0))
        elif kind == DATA and stream == 1:
            data += payload
            if length:
                credit = struct.pack(">I", length)
                sock.sendall(frame(WINDOW_UPDATE, 0, 0, credit) + frame(WINDOW_UPDATE, 0, 1, credit))
            while len(data) >= 5 and len(data) >= 5 + struct.unpack(">I", data[1:5])[0]:
                data = data[5 + struct.unpack(">I", data[1:5])[0]:]
                messages += 1
        elif kind == HEADERS and stream == 1:
            status = dict(decoder.decode(payload)).get("grpc-status")
            if status is not None:
                ended = f"grpc-status {status}"
        elif kind == RST_STREAM and stream == 1:
            ended = "RST_STREAM"
    if ended is None:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            ended = "closed"
        buf += chunk
print(f"{ended or 'silence'} after {messages} of {PUTS} messages")
