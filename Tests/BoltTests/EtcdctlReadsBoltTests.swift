import Bolt
import Checksum
import Foundation
import Testing
import TestSupport

@Suite struct EtcdctlReadsBoltTests {
    /// A real `etcdctl snapshot status` (Debian's 3.4, which also runs
    /// bbolt's consistency check) reads a file our writer made: etcd's
    /// revision keys in `key`, other buckets with random entries, values
    /// up to three pages. It reports the hash, revision and key count etcd
    /// computes (CRC-32C over every bucket's name, keys and values).
    @Test func etcdctlSnapshotStatusReadsOurFile() throws {
        let etcdctl = "/usr/bin/etcdctl"
        guard FileManager.default.isExecutableFile(atPath: etcdctl) else {
            Issue.record("\(etcdctl) is missing: scripts/install-deps.sh installs etcd-client")
            return
        }
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let pool = (0..<(1 << 16)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        func value(_ maxSize: Int) -> [UInt8] {
            let size = Int(rng.next() % UInt64(maxSize))
            let start = Int(rng.next() % UInt64(pool.count - size))
            return Array(pool[start..<(start + size)])
        }
        var revisions: [(key: [UInt8], entry: BoltWriter.Bucket.Entry)] = []
        var main: UInt64 = 1
        for _ in 0..<Int(500 + rng.next() % 1500) {
            main += 1 + rng.next() % 3
            var key = [UInt8](repeating: 0, count: 17)
            for i in 0..<8 { key[i] = UInt8(truncatingIfNeeded: main >> (8 * (7 - i))) }
            key[8] = UInt8(ascii: "_")
            revisions.append((key, .value(value(rng.next() % 8 == 0 ? 12_000 : 600))))
        }
        func randomBucket() -> BoltWriter.Bucket {
            let keys = Set((0..<Int(rng.next() % 50)).map { _ in value(20) + [1] })
            return BoltWriter.Bucket(keys.sorted { $0.lexicographicallyPrecedes($1) }.map { ($0, .value(value(300))) })
        }
        let buckets = [("key", BoltWriter.Bucket(revisions)), ("lease", randomBucket()), ("members", randomBucket()), ("meta", randomBucket())]
        let root = BoltWriter.Bucket(buckets.map { (Array($0.0.utf8), .bucket($0.1)) })
        var crc = CRC32C()
        var total = 0
        for (name, bucket) in buckets {
            crc.update(Array(name.utf8))
            for (k, e) in bucket.entries {
                guard case .value(let v) = e else { continue }
                crc.update(k)
                crc.update(v)
                total += 1
            }
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-bolt-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("db").path
        let bytes = try BoltWriter(pageSize: 4096).write(root)
        #expect(FileManager.default.createFile(atPath: file, contents: Data(bytes)))
        let out = dir.appendingPathComponent("out").path, err = dir.appendingPathComponent("err").path
        let p = try ChildProcess(etcdctl, ["snapshot", "status", file, "-w", "json"], environment: ["ETCDCTL_API": "3"],
                                 stdout: .file(out), stderr: .file(err))
        guard let ended = p.wait(seconds: 60) else {
            p.signal(SIGKILL)
            p.waitUntilExit()
            Issue.record("etcdctl snapshot status ran longer than 60 s")
            return
        }
        let status = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
        let stderr = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        #expect(ended.status == 0, "seed \(seed): \(stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any]
        #expect(json?["hash"] as? Int == Int(crc.value), "seed \(seed): \(status)")
        #expect(json?["revision"] as? Int == Int(main), "seed \(seed): \(status)")
        #expect(json?["totalKey"] as? Int == total, "seed \(seed): \(status)")
        #expect(json?["totalSize"] as? Int == bytes.count, "seed \(seed): \(status)")
    }
}
