"""Python's etcd3 client: watch_prefix sees puts and deletes in order."""
import sys
import threading
import time

import etcd3

host, port = sys.argv[1].rsplit(":", 1)
client = etcd3.client(host=host, port=int(port), timeout=10)
events, cancel = client.watch_prefix("/registry/pods/")


def writer():
    time.sleep(0.3)
    client.put("/registry/pods/a", "1")
    client.put("/registry/other", "x")
    client.put("/registry/pods/b", "2")
    client.delete("/registry/pods/a")


threading.Thread(target=writer, daemon=True).start()
seen = []
deadline = time.time() + 10
for event in events:
    seen.append((type(event).__name__, event.key.decode(), event.value.decode()))
    if len(seen) == 3 or time.time() > deadline:
        break
cancel()
want = [("PutEvent", "/registry/pods/a", "1"), ("PutEvent", "/registry/pods/b", "2"), ("DeleteEvent", "/registry/pods/a", "")]
if seen != want:
    sys.exit(f"got {seen}, want {want}")
print("watch ok")
