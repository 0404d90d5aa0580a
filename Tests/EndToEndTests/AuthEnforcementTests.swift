import EtcdClient
import Foundation
import Testing

/// Authentication enforced: etcdctl 3.4 with `--user`, a user limited to
/// `/registry/pods/`, the certificate's CN as the user, Python's etcd3 with
/// a password, leases and maintenance as etcd checks them, and the enabled
/// state surviving kill -9.
@Suite struct AuthEnforcementTests {
    static let root = ["--user", "root:pw"]
    static let alice = ["--user", "alice:pw"]

    /// (arguments, standard input) run in order against a fresh member.
    static let session: [([String], String?)] = [
        (["user", "add", "root:pw"], nil),
        (["auth", "enable"], nil),
        (["get", "foo"], nil),
        (root + ["put", "foo", "bar"], nil),
        (["--user", "root:wrong", "get", "foo"], nil),
        (["--user", "nobody:pw", "get", "foo"], nil),
        (root + ["user", "add", "alice:pw"], nil),
        (root + ["role", "add", "pods"], nil),
        (root + ["role", "grant-permission", "pods", "readwrite", "/registry/pods/", "--prefix"], nil),
        (root + ["role", "grant-permission", "pods", "read", "/config"], nil),
        (root + ["user", "grant-role", "alice", "pods"], nil),
        (root + ["put", "/config", "c"], nil),
        // Inside her prefix, and the one key she may read.
        (alice + ["put", "/registry/pods/a", "1"], nil),
        (alice + ["get", "/registry/pods/", "--prefix"], nil),
        (alice + ["get", "/config"], nil),
        (alice + ["del", "/registry/pods/nothing"], nil),
        // Everything else is refused, for get, put, delete, txn and watch.
        (alice + ["get", "foo"], nil),
        (alice + ["get", "", "--prefix"], nil),
        (alice + ["get", "/registry/", "--prefix"], nil),
        (alice + ["put", "foo", "x"], nil),
        (alice + ["put", "/config", "x"], nil),
        (alice + ["put", "/registry/pods", "x"], nil),
        (alice + ["del", "foo"], nil),
        (alice + ["del", "/registry/", "--prefix", "--prev-kv"], nil),
        (alice + ["txn"], "value(\"/registry/pods/a\") = \"1\"\n\nput /registry/pods/b 2\n\nput foo 3\n\n"),
        (alice + ["txn"], "value(\"foo\") = \"bar\"\n\nput /registry/pods/b 2\n\n\n"),
        (alice + ["txn"], "value(\"/registry/pods/a\") = \"1\"\n\nput /registry/pods/b 2\nget /registry/pods/ --prefix\n\ndel /registry/pods/z\n\n"),
        (alice + ["watch", "foo"], nil),
        (alice + ["watch", "/registry/", "--prefix"], nil),
        // Managing users and roles is root's, but a user sees itself and its roles.
        (alice + ["user", "list"], nil),
        (alice + ["user", "get", "alice"], nil),
        (alice + ["user", "get", "root"], nil),
        (alice + ["role", "get", "pods"], nil),
        (alice + ["role", "get", "root"], nil),
        (alice + ["user", "add", "mallory:pw"], nil),
        (alice + ["auth", "disable"], nil),
        (alice + ["alarm", "list"], nil),
        // Anyone may compact, even without a user (etcd 3.4 and 3.5 alike).
        (["compaction", "2"], nil),
        (alice + ["compaction", "3"], nil),
        (root + ["user", "delete", "root"], nil),
        (root + ["user", "revoke-role", "root", "root"], nil),
        (root + ["role", "delete", "root"], nil),
        // A new password ends the old one; a revoked role ends the access.
        (root + ["user", "passwd", "alice", "--interactive=false"], "pw2\n"),
        (alice + ["get", "/registry/pods/a"], nil),
        (["--user", "alice:pw2", "get", "/registry/pods/a", "--print-value-only"], nil),
        (root + ["user", "revoke-role", "alice", "pods"], nil),
        (["--user", "alice:pw2", "get", "/registry/pods/a"], nil),
        (root + ["auth", "disable"], nil),
        (["get", "foo", "--print-value-only"], nil),
        (["auth", "disable"], nil),
    ]

    @Test func enforcementPrintsWhatEtcdPrints() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let reference = try ReferenceEtcd()
        defer { reference.stop() }
        let ours = try Etcdctl(endpoint: server.endpoint).transcript(of: Self.session)
        let theirs = try Etcdctl(endpoint: reference.endpoint).transcript(of: Self.session)
        for (o, t) in zip(ours, theirs) { #expect(o == t, "swetcd:\n\(o)\netcd:\n\(t)") }
        // The lines that matter, whatever both print.
        #expect(ours[2].hasSuffix("Error: etcdserver: user name is empty"))
        #expect(ours.filter { $0.contains("Error: etcdserver: permission denied") }.count == 16)
        #expect(ours.contains { $0.contains("watch was canceled (rpc error: code = PermissionDenied desc = etcdserver: permission denied)") })
    }

    /// etcd's later rules (3.5 and on), where 3.4 checked less: leases with
    /// keys a user may not write, maintenance by root only (with gRPC's
    /// PermissionDenied, where 3.4 sent "auth: permission denied" as
    /// Unknown); and the enabled state surviving kill -9.
    @Test func leasesAndMaintenanceAreChecked() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let e = Etcdctl(endpoint: server.endpoint)
        for (arguments, _) in Self.session[0...1] + Self.session[6...10] { _ = try e.run(arguments: arguments) }
        func run(_ arguments: [String]) throws -> String {
            let r = try e.run(arguments: arguments)
            let errors = r.stderr.split(separator: "\n").filter { !$0.hasPrefix("{") }.joined(separator: "\n")
            return r.stdout + errors
        }
        func lease(_ who: [String]) throws -> String {
            let granted = try run(who + ["lease", "grant", "100"])
            return try #require(granted.split(separator: " ").dropFirst().first.map(String.init), "\(granted)")
        }
        let rootLease = try lease(Self.root)
        #expect(try run(Self.root + ["put", "foo", "x", "--lease", rootLease]) == "OK\n")
        let denied = "etcdserver: permission denied"
        #expect(try run(Self.alice + ["put", "/registry/pods/l", "y", "--lease", rootLease]) == "Error: \(denied)")
        #expect(try run(Self.alice + ["lease", "revoke", rootLease]) == "Error: failed to revoke lease (\(denied))")
        #expect(try run(Self.alice + ["lease", "timetolive", rootLease, "--keys"]) == "Error: \(denied)")
        #expect(try run(Self.alice + ["lease", "timetolive", rootLease]).hasPrefix("lease \(rootLease) granted with TTL(100s)"))
        #expect(try run(Self.alice + ["lease", "list"]) == "Error: \(denied)")
        #expect(try run(Self.alice + ["lease", "keep-alive", "--once", rootLease]).contains(denied))
        let aliceLease = try lease(Self.alice)
        #expect(try run(Self.alice + ["put", "/registry/pods/l", "y", "--lease", aliceLease]) == "OK\n")
        #expect(try run(Self.alice + ["lease", "timetolive", aliceLease, "--keys"]).hasSuffix("attached keys([/registry/pods/l])\n"))
        #expect(try run(Self.alice + ["lease", "revoke", aliceLease]) == "lease \(aliceLease) revoked\n")
        #expect(try run(Self.root + ["lease", "revoke", rootLease]) == "lease \(rootLease) revoked\n")

        let member = "etcd member[\(server.endpoint)]"
        #expect(try run(Self.alice + ["defrag"]) == "Failed to defragment \(member) (\(denied))")
        #expect(try run(Self.alice + ["endpoint", "hashkv"]).contains("(\(denied))"))
        let snapshot = server.dataDir + "/../snapshot-\(UUID().uuidString).db"
        defer { try? FileManager.default.removeItem(atPath: snapshot) }
        #expect(try run(Self.alice + ["snapshot", "save", snapshot]) == "Error: \(denied)")
        #expect(try run(Self.root + ["defrag"]) == "Finished defragmenting \(member)\n")
        #expect(try run(Self.root + ["snapshot", "save", snapshot]).hasPrefix("Snapshot saved at"))
        #expect(try run(["endpoint", "status"]).contains("etcdserver: user name is empty"))
        #expect(try run(Self.alice + ["endpoint", "status"]).hasPrefix(server.endpoint))
        #expect(try run(["endpoint", "health"]).contains("etcdserver: user name is empty"))
        #expect(try run(Self.alice + ["endpoint", "health"]).contains("is healthy"))

        server.kill()
        let restarted = try ServerProcess(dataDir: server.dataDir)
        defer { restarted.stop() }
        let again = Etcdctl(endpoint: restarted.endpoint)
        #expect(try again.run("get", "foo").stderr.contains("Error: etcdserver: user name is empty"))
        #expect(try again.run(arguments: Self.alice + ["get", "/config", "--print-value-only"]).stdout == "")
        #expect(try again.run(arguments: Self.alice + ["get", "foo"]).stderr.contains("Error: \(denied)"))
        #expect(try again.run(arguments: Self.root + ["auth", "disable"]).stdout == "Authentication Disabled\n")
    }

    /// With --client-cert-auth and no token, the certificate's CN is the
    /// user: a certificate for "alice" gets alice's permissions, one for
    /// "root" root's; a token still wins over the certificate.
    @Test func certificateCommonNameIsTheUser() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let server = try certs.mutualTLSServer()
        defer { server.stop() }
        let aliceCert = try certs.client(commonName: "alice"), rootCert = try certs.client(commonName: "root")
        let e = Etcdctl(endpoint: server.endpoint)
        let asAlice = ["--cacert", certs.ca, "--cert", aliceCert.cert, "--key", aliceCert.key]
        let asRoot = ["--cacert", certs.ca, "--cert", rootCert.cert, "--key", rootCert.key]
        for (arguments, _) in Self.session[0...1] + Self.session[6...10] {
            let r = try e.run(arguments: arguments + asRoot)
            #expect(r.status == 0, "\(arguments): \(r)")
        }
        #expect(try e.run(arguments: asRoot + ["put", "foo", "bar"]).stdout == "OK\n")
        #expect(try e.run(arguments: asAlice + ["put", "/registry/pods/a", "1"]).stdout == "OK\n")
        #expect(try e.run(arguments: asAlice + ["get", "/registry/pods/a", "--print-value-only"]).stdout == "1\n")
        #expect(try e.run(arguments: asAlice + ["get", "foo"]).stderr.contains("Error: etcdserver: permission denied"))
        #expect(try e.run(arguments: asAlice + ["user", "list"]).stderr.contains("Error: etcdserver: permission denied"))
        // The server's own certificate names "swetcd", no user: refused as an unknown user is.
        let asServer = ["--cacert", certs.ca, "--cert", certs.cert, "--key", certs.key]
        #expect(try e.run(arguments: asServer + ["get", "foo"]).stderr.contains("Error: etcdserver: permission denied"))
        // A token names the user, whatever the certificate says.
        #expect(try e.run(arguments: asAlice + Self.root + ["get", "foo", "--print-value-only"]).stdout == "bar\n")
        #expect(try e.run(arguments: asRoot + Self.alice + ["get", "foo"]).stderr.contains("Error: etcdserver: permission denied"))
    }

    /// The Swift client with a user and password: it authenticates before
    /// its first call, its calls and watches carry the token, refusals are
    /// typed, and after a restart (tokens live in memory) it authenticates
    /// again by itself.
    @Test func swiftClientWithAPassword() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let e = Etcdctl(endpoint: server.endpoint)
        for (arguments, _) in Self.session[0...1] + Self.session[6...10] { _ = try e.run(arguments: arguments) }
        let alice = try EtcdClient(endpoints: [server.endpoint], user: "alice", password: "pw")
        defer { alice.close() }
        try await alice.put("/registry/pods/a", "1")
        #expect(try await alice.get("/registry/pods/a").kvs.first?.valueString == "1")
        await #expect(throws: EtcdError.permissionDenied) { try await alice.get("foo") }
        await #expect(throws: EtcdError.permissionDenied) { try await alice.put("foo", "x") }

        var events = alice.watch(.prefix("/registry/pods/")).makeAsyncIterator()
        #expect(try await events.next()?.created == true)
        try await alice.put("/registry/pods/b", "2")
        #expect(try await events.next()?.events.map(\.kv.keyString) == ["/registry/pods/b"])
        var refused = alice.watch(.key("foo")).makeAsyncIterator()
        let cancelled = try await refused.next()
        #expect(cancelled?.canceled == true && cancelled?.cancelReason.hasSuffix("etcdserver: permission denied") == true)

        let anonymous = try EtcdClient(endpoints: [server.endpoint])
        defer { anonymous.close() }
        await #expect(throws: EtcdError.userEmpty) { try await anonymous.get("/registry/pods/a") }
        let wrong = try EtcdClient(endpoints: [server.endpoint], user: "alice", password: "nope")
        defer { wrong.close() }
        await #expect(throws: EtcdError.authFailed) { try await wrong.get("/registry/pods/a") }

        // A restart forgets every token: the client's next call gets
        // "invalid auth token", authenticates again and succeeds.
        let port = UInt16(server.endpoint.split(separator: ":").last!)!
        server.kill()
        let restarted = try ServerProcess(dataDir: server.dataDir, port: port)
        defer { restarted.stop() }
        #expect(try await alice.get("/registry/pods/b").kvs.first?.valueString == "2")
    }

    /// Python's etcd3 with a password (over TLS: grpcio sends call
    /// credentials only on secure channels).
    @Test func pythonClientWithAPassword() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let port = try ReferenceEtcd.freePort()
        let server = try ServerProcess(arguments: ["--listen-client-urls", "https://127.0.0.1:\(port)",
                                                   "--cert-file", certs.cert, "--key-file", certs.key])
        defer { server.stop() }
        let e = Etcdctl(endpoint: server.endpoint)
        for (arguments, _) in Self.session[0...1] + Self.session[6...8] + Self.session[10...10] {
            let r = try e.run(arguments: arguments + ["--cacert", certs.ca])
            #expect(r.status == 0, "\(arguments): \(r)")
        }
        let r = try runPython("etcd3_auth.py", [server.endpoint, certs.ca])
        #expect(r.status == 0 && r.stdout == "ok\n", "\(r.stdout)\(r.stderr)")
    }
}
