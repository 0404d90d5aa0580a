"""Python's etcd3 client (0.12.0) against swetcd: put, get, get_prefix,
delete, transaction. Exits non-zero with a message on the first mismatch."""
import sys

import etcd3

host, port = sys.argv[1].rsplit(":", 1)
client = etcd3.client(host=host, port=int(port), timeout=10)


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


client.put("/py/a", "1")
client.put("/py/b", "2")
value, meta = client.get("/py/a")
check("get value", value, b"1")
check("get key", meta.key, b"/py/a")
check("get version", meta.version, 1)
check("get missing", client.get("/py/none")[0], None)

check("get_prefix", sorted((v, m.key) for v, m in client.get_prefix("/py/")), [(b"1", b"/py/a"), (b"2", b"/py/b")])

check("delete existing", client.delete("/py/b"), True)
check("delete missing", client.delete("/py/b"), False)

ok, responses = client.transaction(
    compare=[client.transactions.value("/py/a") == "1", client.transactions.version("/py/a") > 0],
    success=[client.transactions.put("/py/a", "txn"), client.transactions.get("/py/a")],
    failure=[client.transactions.put("/py/failed", "x")],
)
check("txn succeeded", ok, True)
check("txn read inside", responses[1][0][0], b"txn")
ok, _ = client.transaction(
    compare=[client.transactions.value("/py/a") == "nope"],
    success=[],
    failure=[client.transactions.delete("/py/a")],
)
check("txn failed", ok, False)
check("txn failure branch", client.get("/py/a")[0], None)

try:
    client.get("/py/a", revision=10**6) if hasattr(client, "get") else None
except Exception:
    pass
print("etcd3 ok")
