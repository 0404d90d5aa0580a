"""Python's etcd3gw (the JSON gateway client OpenStack uses) against
swetcd: put, get, get_prefix, delete, a transaction, leases (grant,
refresh, ttl, keys, revoke), a prefix watch, status and members. Exits
non-zero with a message on the first mismatch."""
import sys
import threading

import etcd3gw

host, port = sys.argv[1].rsplit(":", 1)
client = etcd3gw.client(host=host, port=int(port), timeout=10)


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


check("put", client.put("/gw/a", "1"), True)
client.put("/gw/b", "2")
check("get", client.get("/gw/a"), [b"1"])
check("get missing", client.get("/gw/none"), [])
check("get_prefix", sorted(v for v, _ in client.get_prefix("/gw/")), [b"1", b"2"])
check("delete", client.delete("/gw/b"), True)
check("delete missing", client.delete("/gw/b"), False)
check("create existing", client.create("/gw/a", "x"), False)
check("create new", client.create("/gw/c", "3"), True)

txn = {
    "compare": [{"key": etcd3gw.utils._encode("/gw/a"), "result": "EQUAL", "target": "VALUE",
                 "value": etcd3gw.utils._encode("1")}],
    "success": [{"request_put": {"key": etcd3gw.utils._encode("/gw/t"), "value": etcd3gw.utils._encode("yes")}}],
    "failure": [],
}
check("txn succeeded", client.transaction(txn).get("succeeded"), True)
check("txn put", client.get("/gw/t"), [b"yes"])

lease = client.lease(60)
check("lease ttl", 50 < lease.ttl() <= 60, True)
client.put("/gw/leased", "x", lease=lease)
check("lease keys", lease.keys(), [b"/gw/leased"])
check("lease refresh", lease.refresh(), 60)
check("lease revoke", lease.revoke(), True)
check("leased key gone", client.get("/gw/leased"), [])

# From the next revision, so the writes below are seen even if the watch
# is set up after them (etcd3gw opens it on a thread of its own).
next_revision = int(client.status()["header"]["revision"]) + 1
events, cancel = client.watch_prefix("/gw/w/", start_revision=next_revision)
seen = []
done = threading.Event()


def consume():
    for e in events:
        seen.append((e["kv"]["key"], e["kv"].get("value"), e.get("type", "PUT")))
        if len(seen) == 3:
            done.set()
            return


threading.Thread(target=consume, daemon=True).start()
import time  # noqa: E402
time.sleep(0.5)
client.put("/gw/w/1", "a")
client.put("/gw/w/2", "b")
client.delete("/gw/w/1")
done.wait(10)
cancel()
check("watched", seen, [(b"/gw/w/1", b"a", "PUT"), (b"/gw/w/2", b"b", "PUT"), (b"/gw/w/1", None, "DELETE")])

check("status version", client.status()["version"], "3.5.0")
check("members", len(client.members()), 1)
print("ok")
