"""Misbehaving clients, one per sub-command, against swetcd at argv[2].
Each prints what it observed; the Swift test checks it and then that the
server still serves."""
import socket
import sys
import time

import grpc

cmd, target = sys.argv[1], sys.argv[2]
host, port = target.rsplit(":", 1)


def channel():
    return grpc.insecure_channel(target)


def raw_unary(path, payload, timeout=10):
    call = channel().unary_unary(path)  # no serializer: bytes as they are
    try:
        call(payload, timeout=timeout)
        return "OK"
    except grpc.RpcError as e:
        return f"{e.code().name}: {e.details()}"


if cmd == "unknown-method":
    print(raw_unary("/etcdserverpb.KV/NoSuchMethod", b""))
    print(raw_unary("/etcdserverpb.NoSuchService/Range", b""))
elif cmd == "undecodable":
    # Field 1 (key) says 100 bytes follow; 2 do.
    print(raw_unary("/etcdserverpb.KV/Put", b"\x0a\x64ab"))
elif cmd == "oversized":
    # Over --max-request-bytes plus gRPC's 512 KiB allowance.
    limit = int(sys.argv[3])
    print(raw_unary("/etcdserverpb.KV/Put", b"\x0a\x01k\x12" + b"\xff\xff\xff\x01" + b"x" * (limit + 600 * 1024)))
elif cmd == "garbage":
    s = socket.create_connection((host, int(port)), timeout=5)
    s.sendall(b"\x00\x01\x02garbage that is no preface\r\n\r\n" * 10)
    try:
        data = s.recv(100)
        print("closed" if data == b"" else f"answered {data[:40]!r}")
    except ConnectionResetError:
        print("closed")
elif cmd == "vanish-mid-stream":
    # Start a snapshot stream, take one message, and drop the connection.
    ch = channel()
    stream = ch.unary_stream("/etcdserverpb.Maintenance/Snapshot")(b"", timeout=20)
    first = next(stream)
    print(f"got {len(first)} bytes, then vanished")
    stream.cancel()
    ch.close()
elif cmd == "many-connections":
    opened = []
    for i in range(300):
        s = socket.create_connection((host, int(port)), timeout=5)
        if i % 3 == 1:
            s.sendall(b"PRI * HTTP/2.0\r\n")  # half a preface
        elif i % 3 == 2:
            s.sendall(b"GET /health HTTP/1.1\r\n")  # half a request
        opened.append(s)
    for s in opened:
        s.close()
    print(f"opened and dropped {len(opened)}")
else:
    sys.exit(f"unknown sub-command {cmd}")
