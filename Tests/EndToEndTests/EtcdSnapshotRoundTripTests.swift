import Foundation
import Testing
import TestSupport

/// Data moves from etcd to swetcd and back with nothing lost: a real etcd
/// (3.4, and 3.5) with puts of up to several pages, deletes, a compaction,
/// a lease with keys, and users and roles with auth on → `etcdctl snapshot
/// save` → `swetcd snapshot restore` → swetcd serves the same → `etcdctl
/// snapshot save` from swetcd (etcd's format; `snapshot status` of either
/// etcdctl agrees with swetcdctl's) → the release's own restore → a real
/// etcd serves the same again. "The same": revision, every key, history
/// since the compaction and none before, HashKV, the lease's TTL and keys,
/// and who may log in and do what.
@Suite struct EtcdSnapshotRoundTripTests {
    static let root = ["--user", "root:rootpw"]

    @Test(arguments: [EtcdRelease.v3_4, EtcdRelease.v3_5])
    func etcdToSwetcdAndBack(_ release: EtcdRelease) throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-roundtrip-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let etcd = try ReferenceEtcd(release: release)
        defer { etcd.stop() }
        let ctl = etcd.etcdctl
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let (compactAt, leaseID) = try Self.populate(ctl, &rng)
        let original = try State(of: ctl, compactAt: compactAt, leaseID: leaseID)

        // etcd → swetcd.
        try expectOK(ctl.run(arguments: Self.root + ["snapshot", "save", dir + "/etcd.db"]))
        try expectOK(runCommand(ServerProcess.executable, ["snapshot", "restore", dir + "/etcd.db", "--data-dir", dir + "/swetcd"]))
        let server = try ServerProcess(dataDir: dir + "/swetcd")
        defer { server.stop() }
        let ours = Etcdctl(endpoint: server.endpoint, binary: release.etcdctl)
        let served = try State(of: ours, compactAt: compactAt, leaseID: leaseID)
        #expect(served == original, "seed \(seed): swetcd from \(release) differs: \(served.differences(from: original))")

        // swetcd → etcd.
        try expectOK(ours.run(arguments: Self.root + ["snapshot", "save", dir + "/swetcd.db"]))
        let theirStatus = try Etcdctl(endpoint: "", binary: release.etcdctl).run("snapshot", "status", dir + "/swetcd.db", "-w", "json")
        let ourStatus = try runCommand(CLIGoldenTests.swetcdctl, ["snapshot", "status", dir + "/swetcd.db", "-w", "json"])
        func fields(_ r: CommandResult) -> [String: Int]? {
            (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Int]
        }
        #expect(fields(theirStatus)?["revision"] == original.revision && fields(ourStatus) == fields(theirStatus),
                "\(ourStatus) vs \(theirStatus)")
        let peer = try ReferenceEtcd.freePort()
        let peerURL = "http://127.0.0.1:\(peer)"
        try expectOK(runCommand(release.restoreTool, ["snapshot", "restore", dir + "/swetcd.db", "--data-dir", dir + "/etcd",
                                                      "--name", "default", "--initial-cluster", "default=\(peerURL)",
                                                      "--initial-advertise-peer-urls", peerURL], environment: ["ETCDCTL_API": "3"]))
        let back = try ReferenceEtcd(release: release, dataDir: dir + "/etcd", peerPort: peer, user: "root:rootpw")
        defer { back.stop() }
        let servedBack = try State(of: back.etcdctl, compactAt: compactAt, leaseID: leaseID)
        #expect(servedBack == original, "seed \(seed): \(release) from swetcd differs: \(servedBack.differences(from: original))")
    }

    /// Puts of up to several pages, deletes, a compaction, a lease with
    /// two keys, users and roles, and auth on: what `State` then reads.
    static func populate(_ ctl: Etcdctl, _ rng: inout SeededRandom) throws -> (compactAt: Int, leaseID: String) {
        func expectOK(_ r: CommandResult, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(r.status == 0, "\(r)", sourceLocation: sourceLocation)
        }
        for i in 0..<120 {
            let size = i % 12 == 0 ? 5_000 + Int(rng.next() % 20_000) : Int(rng.next() % 300)
            let value = String((0..<size).map { _ in Character(UnicodeScalar(UInt8(97 + rng.next() % 26))) })
            try expectOK(ctl.run("put", "k\(i % 40)", "--", value))
            if i % 13 == 0 { try expectOK(ctl.run("del", "k\((i + 5) % 40)")) }
        }
        let compactAt = try Self.revision(ctl) - 30
        try expectOK(ctl.run("compact", "\(compactAt)", "--physical"))
        let granted = try ctl.run("lease", "grant", "600").stdout  // "lease 694d... granted with TTL(600s)"
        let leaseID = try #require(granted.split(separator: " ").dropFirst().first.map(String.init), "\(granted)")
        try expectOK(ctl.run("put", "/a/leased", "1", "--lease=\(leaseID)"))
        try expectOK(ctl.run("put", "/c/leased", "2", "--lease=\(leaseID)"))
        for command in [["user", "add", "root:rootpw"], ["user", "grant-role", "root", "root"], ["role", "add", "pods"],
                        ["role", "grant-permission", "pods", "readwrite", "/a", "/b"], ["role", "grant-permission", "pods", "read", "k1"],
                        ["user", "add", "bob:bobpw"], ["user", "grant-role", "bob", "pods"], ["auth", "enable"]] {
            try expectOK(ctl.run(arguments: command))
        }
        return (compactAt, leaseID)
    }

    private func expectOK(_ r: CommandResult, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(r.status == 0, "\(r)", sourceLocation: sourceLocation)
    }

    static func revision(_ c: Etcdctl) throws -> Int {
        let out = try c.run(arguments: root + ["endpoint", "status", "-w", "json"]).stdout
        let list = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]]
        return ((list?.first?["Status"] as? [String: Any])?["header"] as? [String: Any])?["revision"] as? Int ?? -1
    }

    /// What a server holds, as clients see it (read only: nothing here
    /// changes the revision).
    struct State: Equatable, CustomStringConvertible {
        var revision = 0
        var hashKV = ""
        var keys: [[String: String]] = []
        var history: [[[String: String]]] = []
        var compacted = ""
        var lease = ""
        var access: [String] = []

        init(of c: Etcdctl, compactAt: Int, leaseID: String) throws {
            let root = EtcdSnapshotRoundTripTests.root
            func kvs(at revision: Int) throws -> [[String: String]] {
                let out = try c.run(arguments: root + ["get", "", "--from-key", "--rev=\(revision)", "-w", "json"]).stdout
                let body = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
                return ((body?["kvs"] as? [[String: Any]]) ?? []).map { kv in kv.mapValues { "\($0)" } }
            }
            revision = try EtcdSnapshotRoundTripTests.revision(c)
            let hash = try c.run(arguments: root + ["endpoint", "hashkv", "--rev=\(revision)", "-w", "json"]).stdout
            hashKV = hash.range(of: "\"hash\":").map { String(hash[$0.upperBound...].prefix { $0.isNumber }) } ?? "none in \(hash)"
            keys = try kvs(at: 0)
            history = try [compactAt, compactAt + 10, revision - 3].map(kvs)
            compacted = try c.run(arguments: root + ["get", "k1", "--rev=\(compactAt - 1)"]).stderr
                .contains("required revision has been compacted") ? "compacted" : "served"
            // "lease 694d... granted with TTL(600s), remaining(598s), attached keys([...])": the TTL and keys.
            let ttl = try c.run(arguments: root + ["lease", "timetolive", leaseID, "--keys"]).stdout
            // The keys in order: etcd lists them as its lessor's map iterates.
            let attached = ttl.range(of: "attached keys([").map { ttl[$0.upperBound...].prefix { $0 != "]" } } ?? ""
            lease = ttl.replacingOccurrences(of: #"remaining\(\d+s\).*"#, with: "remaining", options: .regularExpression)
                + " keys " + attached.split(separator: " ").sorted().joined(separator: " ")
            // Who may do what: each command's exit status and error.
            for (user, command) in [("bob:bobpw", ["get", "/a", "--prefix"]), ("bob:bobpw", ["get", "k1"]),
                                    ("bob:bobpw", ["get", "k2"]), ("bob:wrong", ["get", "k1"]), (nil, ["get", "k1"]),
                                    ("root:rootpw", ["user", "get", "bob"]), ("root:rootpw", ["role", "get", "pods"]),
                                    ("root:rootpw", ["auth", "status"])] {
                let r = try c.run(arguments: (user.map { ["--user", $0] } ?? []) + command)
                let error = r.stderr.split(separator: "\n").last { $0.hasPrefix("Error:") }.map(String.init) ?? ""
                // auth status prints a revision that etcd bumps on every auth change.
                let out = command[0] == "auth" ? String(r.stdout.prefix { $0 != "\n" }) : r.stdout
                access.append("\(user ?? "-") \(command.joined(separator: " ")) -> \(r.status) \(out)\(error)")
            }
        }

        var description: String {
            "revision \(revision), hashKV \(hashKV), \(keys.count) keys, \(compacted) below compaction, lease \(lease),\n"
                + access.joined(separator: "\n")
        }

        /// Each field that differs, with both values.
        func differences(from other: State) -> String {
            var out: [String] = []
            func check<T: Equatable>(_ name: String, _ a: T, _ b: T) { if a != b { out.append("\(name): \(a) instead of \(b)") } }
            check("revision", revision, other.revision)
            check("hashKV", hashKV, other.hashKV)
            check("keys", keys, other.keys)
            check("history", history, other.history)
            check("below the compaction", compacted, other.compacted)
            check("lease", lease, other.lease)
            for (a, b) in zip(access, other.access) { check("access", a, b) }
            return out.joined(separator: "\n")
        }
    }
}
