"""Watch streams driven with raw gRPC messages (etcd3's protobufs, plus the
progress request they lack), for etcd's watch bugs:

  progress-after-history  etcd #15220: a progress response must never claim a
                          revision while events at or below it are still to
                          come on that stream.
  many-prevkv-watchers    etcd #17529: one stream with many prev_kv watchers
                          must not starve, nor delay another stream.
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
                out.put(rpc_pb2.WatchResponse.FromString(raw))
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
    shared, _, stop_shared = open_stream([create(b"/p/", b"/p0", prev_kv=True) for _ in range(watchers)])
    other, _, stop_other = open_stream([create(b"/p/", b"/p0")])
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
else:
    sys.exit(f"unknown sub-command {cmd}")
