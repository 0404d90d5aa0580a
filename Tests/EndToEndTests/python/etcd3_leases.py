"""Python's etcd3 client (0.12.0) leases against swetcd: grant, put with a
lease, time to live with keys, refresh (a keep-alive), revoke, and a lease
that expires. Exits non-zero with a message on the first mismatch."""
import sys
import time

import etcd3

host, port = sys.argv[1].rsplit(":", 1)
client = etcd3.client(host=host, port=int(port), timeout=10)


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


lease = client.lease(30)
check("granted ttl", lease.ttl, 30)
client.put("/py/leased", "1", lease=lease)
client.put("/py/plain", "2")
check("lease of the key", client.get("/py/leased")[1].lease_id, lease.id)
check("granted", lease.granted_ttl, 30)
if not 25 <= lease.remaining_ttl <= 30:
    sys.exit(f"remaining ttl {lease.remaining_ttl}")
check("keys", lease.keys, [b"/py/leased"])
refreshed = lease.refresh()
check("refresh ttl", refreshed[0].TTL, 30)
lease.revoke()
check("revoked key", client.get("/py/leased")[0], None)
check("other key", client.get("/py/plain")[0], b"2")
check("ttl after revoke", client.get_lease_info(lease.id).TTL, -1)

short = client.lease(1)  # raised to the 2 s minimum
check("minimum ttl", short.ttl, 2)
client.put("/py/short", "x", lease=short)
deadline = time.time() + 10
while client.get("/py/short")[0] is not None and time.time() < deadline:
    time.sleep(0.1)
check("expired key", client.get("/py/short")[0], None)
print("etcd3 leases ok")
