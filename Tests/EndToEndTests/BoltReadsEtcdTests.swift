import Bolt
import Foundation
import MVCC
import Testing
import TestSupport

@Suite struct BoltReadsEtcdTests {
    /// Our reader on a snapshot a real etcd 3.4 saved (its bbolt file and
    /// the SHA-256 etcd appends): etcd's buckets are there, and the `key`
    /// bucket's revisions, decoded as `mvccpb.KeyValue`, give every key's
    /// newest value, values of several pages (overflow pages) included;
    /// and `swetcdctl snapshot status` reports what `etcdctl`'s does.
    @Test func ourReaderReadsASnapshotEtcdSaved() throws {
        let etcd = try ReferenceEtcd()
        defer { etcd.stop() }
        let ctl = Etcdctl(endpoint: etcd.endpoint)
        var rng = SeededRandom(seed: testSeed())
        var expected: [String: String] = [:]
        for i in 0..<120 {
            let key = "k\(i % 40)"
            let size = i % 10 == 0 ? 9_000 + Int(rng.next() % 9_000) : Int(rng.next() % 200)
            let value = String((0..<size).map { _ in Character(UnicodeScalar(UInt8(97 + rng.next() % 26))) })
            let put = try ctl.run("put", key, "--", value)
            #expect(put.status == 0, "\(put)")
            expected[key] = value
        }
        _ = try ctl.run("del", "k7")
        expected["k7"] = nil
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-boltsnap-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("snap.db").path
        let saved = try ctl.run("snapshot", "save", file)
        #expect(saved.status == 0, "\(saved)")
        var bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: file)))
        if bytes.count % 4096 == 32 { bytes.removeLast(32) }  // etcd's SHA-256
        let reader = try BoltReader(bytes: bytes)
        let names = Set(try reader.bucketNames().map { String(decoding: $0, as: UTF8.self) })
        #expect(names.isSuperset(of: ["key", "meta", "lease", "members"]), "\(names)")
        var latest: [String: String] = [:]
        var revisions = 0
        try reader.forEach(inBucket: [Array("key".utf8)]) { k, e in
            guard case .value(let v) = e, let kv = KeyValue(encoded: Array(v)) else {
                Issue.record("revision \(Array(k)) does not decode")
                return
            }
            revisions += 1
            let name = String(decoding: kv.key, as: UTF8.self)
            if k.count == 18 { latest[name] = nil } else { latest[name] = String(decoding: kv.value, as: UTF8.self) }
        }
        #expect(revisions == 121)
        #expect(latest == expected)

        // swetcdctl snapshot status on etcd's file says what etcdctl says.
        let theirs = try ctl.run("snapshot", "status", file, "-w", "json")
        let ours = try runCommand(CLIGoldenTests.swetcdctl, ["snapshot", "status", file, "-w", "json"])
        func fields(_ r: CommandResult) -> [String: Int]? {
            (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8))) as? [String: Int]
        }
        #expect(fields(theirs) != nil && fields(ours) == fields(theirs), "\(ours) vs \(theirs)")
    }
}

@Suite struct EtcdSnapshotRestoreTests {
    /// A real etcd 3.4 with puts (some of several pages), deletes, a
    /// compaction and a lease with keys → `etcdctl snapshot save` →
    /// `swetcdctl snapshot restore` → swetcd serves the same keys, the same
    /// HashKV at etcd's revision, the history since the compaction, and the
    /// lease with its TTL and keys.
    @Test func swetcdServesWhatEtcdSaved() async throws {
        let etcd = try ReferenceEtcd()
        defer { etcd.stop() }
        let ctl = Etcdctl(endpoint: etcd.endpoint)
        var rng = SeededRandom(seed: testSeed())
        for i in 0..<150 {
            let size = i % 15 == 0 ? 5_000 + Int(rng.next() % 20_000) : Int(rng.next() % 300)
            let value = String((0..<size).map { _ in Character(UnicodeScalar(UInt8(97 + rng.next() % 26))) })
            #expect(try ctl.run("put", "k\(i % 50)", "--", value).status == 0)
            if i % 17 == 0 { _ = try ctl.run("del", "k\((i + 3) % 50)") }
        }
        func revision(_ c: Etcdctl) throws -> Int {
            let out = try c.run("endpoint", "status", "-w", "json").stdout
            let list = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [[String: Any]]
            return ((list?.first?["Status"] as? [String: Any])?["header"] as? [String: Any])?["revision"] as? Int ?? -1
        }
        let compactAt = try revision(ctl) - 40
        #expect(try ctl.run("compact", "\(compactAt)", "--physical").status == 0)
        let granted = try ctl.run("lease", "grant", "600").stdout  // "lease 694d... granted with TTL(600s)"
        let leaseID = try #require(granted.split(separator: " ").dropFirst().first.map(String.init), "\(granted)")
        #expect(try ctl.run("put", "leased/a", "1", "--lease=\(leaseID)").status == 0)
        #expect(try ctl.run("put", "leased/b", "2", "--lease=\(leaseID)").status == 0)
        let rev = try revision(ctl)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-etcdrestore-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(try ctl.run("snapshot", "save", dir + "/etcd.db").status == 0)
        let restored = try runCommand(CLIGoldenTests.swetcdctl, ["snapshot", "restore", dir + "/etcd.db", "--data-dir", dir + "/data"])
        #expect(restored.status == 0, "\(restored)")

        let server = try ServerProcess(dataDir: dir + "/data")
        defer { server.stop() }
        let ours = Etcdctl(endpoint: server.endpoint)
        #expect(try revision(ours) == rev)
        /// The kvs of a get of every key, at a revision or the newest.
        func kvs(_ c: Etcdctl, at revision: Int = 0) throws -> [[String: String]] {
            let out = try c.run("get", "", "--from-key", "--rev=\(revision)", "-w", "json").stdout
            let body = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]
            return ((body?["kvs"] as? [[String: Any]]) ?? []).map { kv in kv.mapValues { "\($0)" } }
        }
        #expect(try kvs(ours) == kvs(ctl))
        let hashOurs = try ours.run("endpoint", "hashkv", "--rev=\(rev)", "-w", "json").stdout
        let hashEtcd = try ctl.run("endpoint", "hashkv", "--rev=\(rev)", "-w", "json").stdout
        func hashOf(_ json: String) -> String? { json.range(of: "\"hash\":").map { String(json[$0.upperBound...].prefix { $0.isNumber }) } }
        #expect(hashOf(hashOurs) != nil && hashOf(hashOurs) == hashOf(hashEtcd), "\(hashOurs) vs \(hashEtcd)")
        // History since the compaction; none before it.
        for at in [compactAt, compactAt + 1, compactAt + 20] {
            #expect(try kvs(ours, at: at) == kvs(ctl, at: at), "at \(at)")
        }
        let below = try ours.run("get", "k1", "--rev=\(compactAt - 1)")
        #expect(below.stderr.contains("required revision has been compacted"), "\(below)")
        let ttl = try ours.run("lease", "timetolive", leaseID, "--keys").stdout
        #expect(ttl.contains("granted with TTL(600s)") && ttl.contains("leased/a") && ttl.contains("leased/b"), "\(ttl)")
    }
}
