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
