"""python-etcd (the v2 API) against one endpoint: writes, reads, a
compare-and-swap that fails and one that succeeds, create-only, a sorted
recursive listing, a long-poll watch woken by a write, a watch from an
index, an in-order key, a TTL that expires, a recursive delete. Prints
what it saw (indexes left out, so swetcd and etcd can be compared).
argv: endpoint."""
import sys
import threading
import time

import etcd

host, port = sys.argv[1].rsplit(":", 1)
c = etcd.Client(host=host, port=int(port))
seen = []
r = c.write("/py/k", "v1")
seen.append((r.action, r.key, r.value))
seen.append(c.read("/py/k").value)
try:
    c.write("/py/k", "v2", prevValue="nope")
    seen.append("compare-and-swap on a wrong value succeeded")
except etcd.EtcdCompareFailed as e:
    seen.append(("compare failed", str(e)))
r = c.write("/py/k", "v2", prevValue="v1")
seen.append((r.action, r.value, r._prev_node.value))
try:
    c.write("/py/k", "x", prevExist=False)
    seen.append("create over an existing key succeeded")
except etcd.EtcdAlreadyExist:
    seen.append("already exists")
try:
    c.read("/py/none")
    seen.append("read a missing key")
except etcd.EtcdKeyNotFound:
    seen.append("not found")
c.write("/py/dir/b", "2")
c.write("/py/dir/a", "1")
listing = c.read("/py/dir", recursive=True, sorted=True)
seen.append([(n.key, n.value) for n in listing.children])

# The long poll asks from the index after now, so it sees the write even
# if it starts after it.
base = c.read("/py/k").etcd_index
woken = []
waiter = threading.Thread(target=lambda: woken.append(c.read("/py/w", wait=True, waitIndex=base + 1, timeout=10).value))
waiter.start()
time.sleep(0.5)
c.write("/py/w", "woke")
waiter.join(timeout=15)
seen.append(woken)
index = c.write("/py/w", "again").modifiedIndex
seen.append(c.watch("/py/w", index=index, timeout=10).value)
r = c.write("/py/q", "job", append=True)
seen.append((r.action, r.key.rsplit("/", 1)[0], len(r.key.rsplit("/", 1)[1])))
r = c.write("/py/t", "x", ttl=1)
seen.append(("ttl", r.ttl))
time.sleep(3.5)
try:
    c.read("/py/t")
    seen.append("the TTL did not expire")
except etcd.EtcdKeyNotFound:
    seen.append("expired")
seen.append(c.delete("/py", recursive=True).action)
seen.append(len(c.machines))
print(seen)
