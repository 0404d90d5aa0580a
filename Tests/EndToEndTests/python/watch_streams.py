"""Watch streams driven with raw gRPC messages (etcd3's protobufs, plus the
progress request they lack), for etcd's watch bugs:

  progress-after-history  etcd #15220: a progress response must never claim a
                          revision while events at or below it are still to
                          come on that stream.
  many-prevkv-watchers    etcd #17529: one stream with many prev_kv watchers
                          must not starve, nor delay another stream.
  half-closed             a client done sending still gets its events (the
                          stream ends when it cancels), as etcd does.
"""
import queue
import sys
import threading
import time

import etcd3
import grpc
from etcd3.etcdrpc import rpc_pb2

cmd, target = sys.argv[1], sys.argv[2]
host, port = target.rsplit(":", 1)
client = etcd3.client(host=host, port=int(port), timeout=20)
PROGRESS_REQUEST = b"\x1a\x00"  # WatchRequest{progress_request: {}}


def create(key, range_end=b"", start=0, prev_kv=False):
    return rpc_pb2.WatchRequest(create_request=rpc_pb2.WatchCreateRequest(
        key=key, range_end=range_end, start_revision=start, prev_kv=prev_kv)).SerializeToString()


class Response:
    """A decoded WatchResponse plus `is_fragment`, which etcd3 0.12's
    protobufs lack (field 7)."""

    def __init__(self, raw):
        self.message = rpc_pb2.WatchResponse.FromString(raw)
        self.is_fragment = top_level_varint(raw, 7) == 1

    def __getattr__(self, name):
        return getattr(self.message, name)


def top_level_varint(raw, field):
    """The value of a top-level varint field of a protobuf message, or 0."""
    i = 0

    def varint():
        nonlocal i
        shift = value = 0
        while True:
            b = raw[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if b < 0x80:
                return value
    while i < len(raw):
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            v = varint()
            if number == field:
                return v
        elif wire == 2:
            length = varint()  # read first: `i += varint()` would add to the old i
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
    return 0


def open_stream(requests, read_after=0.0):
    """Sends `requests` (bytes) and then keeps the stream open; returns a
    queue of decoded responses, a function that sends one more request, and
    one that ends the stream. Reading starts after `read_after` seconds."""
    out = queue.Queue()
    outgoing = queue.Queue()
    for r in requests:
        outgoing.put(r)

    def gen():
        while True:
            r = outgoing.get()
            if r is None:
                return
            yield r

    call = grpc.insecure_channel(target).stream_stream("/etcdserverpb.Watch/Watch")(gen(), timeout=60)

    def reader():
        time.sleep(read_after)
        try:
            for raw in call:
                out.put(Response(raw))
        except grpc.RpcError:
            pass

    threading.Thread(target=reader, daemon=True).start()
    return out, outgoing.put, lambda: (outgoing.put(None), call.cancel())


if cmd == "progress-after-history":
    # Ten MB of history: more than the server queues for one stream, so the
    # watcher is still catching up (unsynced) when the progress request
    # comes, while this client is not reading yet.
    value = "x" * 4096
    for i in range(2500):
        client.put(f"/h/{i % 50}", value)
    current = client.get("/h/0")[1].response_header.revision
    responses, send, stop = open_stream([create(b"/h/", b"/h0", start=1)], read_after=1.5)
    time.sleep(0.5)
    send(PROGRESS_REQUEST)
    highest_event, progress = 0, None
    deadline = time.time() + 20
    while time.time() < deadline and (progress is None or highest_event < current):
        try:
            r = responses.get(timeout=1)
        except queue.Empty:
            continue
        if r.events:
            if progress is not None and r.events[0].kv.mod_revision <= progress:
                sys.exit(f"event at {r.events[0].kv.mod_revision} after a progress response at {progress}")
            highest_event = r.events[-1].kv.mod_revision
        elif r.watch_id == -1 and not r.created:
            progress = r.header.revision
            if highest_event < progress:
                sys.exit(f"progress at {progress} while only events up to {highest_event} were sent")
    stop()
    if progress is None or highest_event != current:
        sys.exit(f"progress {progress}, events up to {highest_event}, current {current}")
    print(f"progress {progress} after every event up to {highest_event}")

elif cmd == "many-prevkv-watchers":
    watchers, writes = 100, 200
    # From the next revision: a watcher set up late still sees every write.
    start_revision = client.put("/p-start", "x").header.revision + 1
    shared, _, stop_shared = open_stream([create(b"/p/", b"/p0", start=start_revision, prev_kv=True)
                                          for _ in range(watchers)])
    other, _, stop_other = open_stream([create(b"/p/", b"/p0", start=start_revision)])
    time.sleep(0.5)
    start = time.time()
    for i in range(writes):
        client.put(f"/p/{i % 10}", str(i))
    per_watcher = {}
    other_events = 0
    deadline = time.time() + 30
    while time.time() < deadline and (other_events < writes or sum(per_watcher.values()) < watchers * writes):
        try:
            r = shared.get(timeout=0.05)
            per_watcher[r.watch_id] = per_watcher.get(r.watch_id, 0) + len(r.events)
            for e in r.events:
                if e.kv.version > 1 and not e.HasField("prev_kv"):
                    sys.exit("an update event without its prev_kv")
        except queue.Empty:
            pass
        while not other.empty():
            other_events += len(other.get().events)
    stop_shared()
    stop_other()
    if other_events != writes or sorted(per_watcher.values()) != [writes] * watchers:
        sys.exit(f"other stream {other_events}/{writes}, shared {sorted(set(per_watcher.values()))} for {len(per_watcher)} watchers")
    print(f"{watchers} prev_kv watchers and another stream got all {writes} events in {time.time() - start:.1f} s")
elif cmd == "fragments":
    # With --max-request-bytes small, one revision of 20 delete events, each
    # with a 300-byte prev_kv, is sent in fragments: all but the last are
    # marked, and together they hold every event in order.
    for i in range(20):
        client.put(f"/f/{i:02}", "x" * 300)
    inner = rpc_pb2.WatchCreateRequest(key=b"/f/", range_end=b"/f0", prev_kv=True).SerializeToString()
    inner += b"\x40\x01"  # field 8, fragment: true (etcd3 0.12's protobufs lack it)
    request = b"\x0a" + bytes([len(inner)]) + inner
    responses, _, stop = open_stream([request])
    # The deletes must come after the watch exists (a fixed pause was too
    # short once under load).
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            if responses.get(timeout=0.5).created:
                break
        except queue.Empty:
            continue
    client.delete_prefix("/f/")
    pieces = []
    deadline = time.time() + 10
    while time.time() < deadline and (not pieces or pieces[-1].is_fragment):
        try:
            r = responses.get(timeout=0.5)
        except queue.Empty:
            continue
        if r.events:
            pieces.append(r)
    stop()
    flags = [p.is_fragment for p in pieces]
    keys = [e.kv.key.decode() for p in pieces for e in p.events]
    if len(pieces) < 2 or flags != [True] * (len(pieces) - 1) + [False] or keys != [f"/f/{i:02}" for i in range(20)]:
        sys.exit(f"fragments {flags}, keys {keys}")
    print(f"{len(pieces)} fragments")
elif cmd == "half-closed":
    responses, send, stop = open_stream([create(b"/hc", start=client.put("/hc-start", "x").header.revision + 1)])
    send(None)  # done sending: half-close
    time.sleep(0.5)
    client.put("/hc", "after")
    deadline = time.time() + 10
    events = []
    while time.time() < deadline and not events:
        try:
            events = responses.get(timeout=0.5).events
        except queue.Empty:
            continue
    stop()
    if [e.kv.value for e in events] != [b"after"]:
        sys.exit(f"no event after half-close: {events}")
    print("event after half-close")
else:
    sys.exit(f"unknown sub-command {cmd}")
