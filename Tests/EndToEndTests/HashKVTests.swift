import Foundation
import Testing
import TestSupport

@Suite struct HashKVTests {
    /// The same random puts, deletes and compactions on swetcd and a real
    /// etcd 3.4: HashKV agrees at every revision after the last compaction,
    /// and both refuse the ones at or below it. (etcd hashes, below the
    /// compacted revision, only each key's revision a read at the hashed
    /// revision sees; swetcd once kept what the compaction kept, and
    /// differed from etcd after every compaction.)
    @Test func hashKVAgreesWithEtcdAtEveryRevision() throws {
        let etcd = try ReferenceEtcd()
        defer { etcd.stop() }
        let server = try ServerProcess()
        defer { server.stop() }
        let both = [Etcdctl(endpoint: etcd.endpoint), Etcdctl(endpoint: server.endpoint)]
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        var revision = 1
        var compacted = 0
        for _ in 0..<60 {
            let key = "h\(rng.next() % 6)"
            let op = rng.next() % 10
            var args: [String]
            switch op {
            case 0...5: args = ["put", key, "v\(rng.next() % 1000)"]
            case 6, 7: args = ["del", key]
            default:
                guard revision - compacted > 2 else { continue }
                let at = compacted + 1 + Int(rng.next() % UInt64(revision - compacted - 1))
                args = ["compact", "\(at)", "--physical"]
                compacted = at
            }
            var outputs: [String] = []
            for c in both { outputs.append(try c.run(arguments: args).stdout) }
            // A delete of nothing does not move the revision.
            if args[0] == "put" || (args[0] == "del" && outputs[0].hasPrefix("1")) { revision += 1 }
            #expect(outputs[0] == outputs[1] || args[0] == "compact", "seed \(seed): \(args): \(outputs)")
        }
        func hash(_ c: Etcdctl, _ rev: Int) throws -> String {
            let r = try c.run("endpoint", "hashkv", "--rev=\(rev)", "-w", "json")
            if r.status != 0 { return "refused: \(r.stderr.contains("compacted") ? "compacted" : r.stderr)" }
            return r.stdout.range(of: "\"hash\":").map { String(r.stdout[$0.upperBound...].prefix { $0.isNumber }) } ?? r.stdout
        }
        for rev in max(1, compacted - 1)...revision {
            let (theirs, ours) = (try hash(both[0], rev), try hash(both[1], rev))
            #expect(theirs == ours, "seed \(seed): HashKV at \(rev) (compacted at \(compacted)): etcd \(theirs), swetcd \(ours)")
        }
    }
}
