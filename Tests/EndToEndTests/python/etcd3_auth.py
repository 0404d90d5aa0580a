"""Python's etcd3 client (0.12.0) with a user and password against swetcd
over TLS (grpcio sends a token only on a secure channel; argv[2] is the CA)
with auth enabled (root:pw; alice:pw may read and write /registry/pods/):
alice reads and writes there, is refused elsewhere (get, put, txn, watch),
watches her prefix, and her token dies when her password changes. Exits
non-zero with a message on the first mismatch."""
import sys
import threading

import etcd3
import grpc

host, port = sys.argv[1].rsplit(":", 1)
ca = sys.argv[2]


def client(user, password):
    return etcd3.client(host=host, port=int(port), ca_cert=ca, timeout=10, user=user, password=password)


def check(what, got, want):
    if got != want:
        sys.exit(f"{what}: got {got!r}, want {want!r}")


def refused(what, call, code, message):
    try:
        call()
    except grpc.RpcError as e:
        check(what + " code", e.code(), code)
        check(what + " message", e.details(), message)
        return
    except Exception as e:  # etcd3 wraps some errors in its own types
        cause = e.__cause__ or e.__context__
        if isinstance(cause, grpc.RpcError):
            check(what + " code", cause.code(), code)
            check(what + " message", cause.details(), message)
            return
        sys.exit(f"{what}: raised {e!r}")
    sys.exit(f"{what}: was not refused")


DENIED = "etcdserver: permission denied"
root = client("root", "pw")
alice = client("alice", "pw")

alice.put("/registry/pods/p", "1")
check("alice reads her pod", alice.get("/registry/pods/p")[0], b"1")
check("alice lists her prefix", [m.key for _, m in alice.get_prefix("/registry/pods/")], [b"/registry/pods/p"])
refused("get outside", lambda: alice.get("/secret"), grpc.StatusCode.PERMISSION_DENIED, DENIED)
refused("put outside", lambda: alice.put("/secret", "x"), grpc.StatusCode.PERMISSION_DENIED, DENIED)
refused("txn touching outside", lambda: alice.transaction(
    compare=[alice.transactions.value("/registry/pods/p") == "1"],
    success=[alice.transactions.put("/registry/pods/q", "2")],
    failure=[alice.transactions.get("/secret")]), grpc.StatusCode.PERMISSION_DENIED, DENIED)
ok, _ = alice.transaction(compare=[alice.transactions.value("/registry/pods/p") == "1"],
                          success=[alice.transactions.put("/registry/pods/q", "2")], failure=[])
check("txn inside", ok, True)
check("root reads what alice wrote", root.get("/registry/pods/q")[0], b"2")

# A watch on her prefix sees her writes.
events, cancel = alice.watch_prefix("/registry/pods/")
seen = []
done = threading.Event()


def consume():
    for e in events:
        seen.append((e.key, e.value))
        if len(seen) == 2:
            done.set()
            return


threading.Thread(target=consume, daemon=True).start()
alice.put("/registry/pods/w1", "a")
root.put("/registry/pods/w2", "b")
done.wait(10)
cancel()
check("watched events", seen, [(b"/registry/pods/w1", b"a"), (b"/registry/pods/w2", b"b")])

# A password change ends alice's token.
# (etcd3 0.12 has no user API: its Auth stub, with root's token.)
root.auth_stub.UserChangePassword(etcd3.etcdrpc.AuthUserChangePasswordRequest(name="alice", password="pw2"),
                                  10, metadata=root.metadata)
refused("old token", lambda: alice.get("/registry/pods/p"), grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
refused("old password", lambda: client("alice", "pw"), grpc.StatusCode.INVALID_ARGUMENT,
        "etcdserver: authentication failed, invalid user ID or password")
check("new password", client("alice", "pw2").get("/registry/pods/p")[0], b"1")

# A storm of logins with wrong passwords (each a slow hash) does not stop
# the server from answering others meanwhile, and each gets its error.
import time  # noqa: E402
request = etcd3.etcdrpc.AuthenticateRequest(name="alice", password="wrong")
storm = [root.auth_stub.Authenticate.future(request, 60) for _ in range(200)]
started = time.time()
check("read during the storm", root.get("/registry/pods/p")[0], b"1")
during = time.time() - started
if during > 1:
    sys.exit(f"a read took {during:.2f} s during the login storm")
for f in storm:
    e = f.exception()
    check("storm error", (e.code(), e.details()) if e else None,
          (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: authentication failed, invalid user ID or password"))
print("ok")
