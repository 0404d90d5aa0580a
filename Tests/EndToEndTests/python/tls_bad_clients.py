"""Misbehaving clients on swetcd's TLS port (argv: endpoint ca cert key):
plaintext HTTP/2, a handshake that stops half way, garbage after a
handshake, an oversized request header, a request sent one byte a second.
A trusted gRPC client must be served before, during and after. Prints what
it saw and "tls bad clients ok" at the end; exits non-zero on a failure."""
import socket
import ssl
import sys
import time

import grpc

target, ca, cert, key = sys.argv[1:5]
host, port = target.rsplit(":", 1)
port = int(port)


def fail(why):
    sys.exit(why)


def served():
    creds = grpc.ssl_channel_credentials(open(ca, "rb").read(), open(key, "rb").read(), open(cert, "rb").read())
    with grpc.secure_channel(target, creds) as ch:
        status = ch.unary_unary("/etcdserverpb.Maintenance/Status")
        return len(status(b"", timeout=5)) > 0


def closed_soon(sock, seconds=5):
    """True if the server closes (or resets) the connection within `seconds`."""
    sock.settimeout(seconds)
    try:
        while True:
            if not sock.recv(4096):
                return True
    except (ConnectionResetError, ssl.SSLError, OSError) as e:
        return not isinstance(e, socket.timeout)


def tls_context(alpn):
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(alpn)
    return ctx


if not served():
    fail("not served at the start")

# Plaintext HTTP/2 to the TLS port: not a TLS record, the handshake fails.
s = socket.create_connection((host, port), timeout=5)
s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00" * 64)
print("plaintext h2 closed:", closed_soon(s))
s.close()

# A handshake that stops half way: the first half of a real ClientHello,
# then nothing; held open while others are served.
incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
hello = tls_context(["h2"]).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
try:
    hello.do_handshake()
except ssl.SSLWantReadError:
    pass
client_hello = outgoing.read()
half = socket.create_connection((host, port), timeout=5)
half.sendall(client_hello[: len(client_hello) // 2])

# One byte a second of an HTTP/1.1 request, held open too.
slow = tls_context(["http/1.1"]).wrap_socket(socket.create_connection((host, port), timeout=5), server_hostname="127.0.0.1")
request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
for b in request[:3]:
    slow.send(bytes([b]))
    time.sleep(1)
    if not served():
        fail("not served while a client sends one byte a second")

if not served():
    fail("not served while a handshake hangs half way")

# Garbage where TLS records belong, after a full handshake.
g = tls_context(["h2"]).wrap_socket(socket.create_connection((host, port), timeout=5), server_hostname="127.0.0.1")
raw = socket.socket(fileno=socket.dup(g.fileno()))
raw.sendall(b"\x17\x03\x03\x00\x10" + b"garbage!garbage!" + b"\xff" * 200)
print("garbage records closed:", closed_soon(raw))
raw.close()
g.close()

# An oversized request header over HTTP/1.1.
big = tls_context(["http/1.1"]).wrap_socket(socket.create_connection((host, port), timeout=5), server_hostname="127.0.0.1")
answer = b""
try:
    # The server may answer and close before all of it is sent.
    big.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 << 20) + b"\r\n\r\n")
except (ssl.SSLError, OSError):
    pass
try:
    big.settimeout(5)
    answer = big.recv(200)
except (ssl.SSLError, OSError):
    pass
print("oversized header answered:", answer.split(b"\r\n")[0].decode(errors="replace") or "(closed)")
big.close()

# The slow request completes and is answered.
for b in request[3:]:
    slow.send(bytes([b]))
slow.settimeout(5)
first = slow.recv(200).split(b"\r\n")[0]
print("slow request answered:", first.decode())
if not first.startswith(b"HTTP/1.1 200"):
    fail("the slow request was not answered")
slow.close()
# The server gives a handshake a deadline (the test sets 1 s): by now the
# half-done one is closed, while the slow client, past its handshake, was not.
print("half handshake closed:", closed_soon(half, 3))
half.close()

if not served():
    fail("not served at the end")
print("tls bad clients ok")
