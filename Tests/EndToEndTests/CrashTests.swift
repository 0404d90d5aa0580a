import EtcdClient
import Foundation
import Testing
import TestSupport

/// Kill -9 at a random moment while writers run, restart, and check what
/// was acknowledged (etcd's bugs #13766, #14370, #17780 are lost or
/// reordered acknowledged writes). SWETCD_CRASH_ROUNDS sets the rounds (20).
@Suite struct CrashTests {
    actor Ledger {
        /// key -> (value, revision) of every acknowledged write.
        var acknowledged: [String: (String, Int64)] = [:]
        /// Txns sent but not acknowledged: their two keys and value.
        var unacknowledgedTxns: [(String, String, String)] = []
        func ack(_ key: String, _ value: String, _ revision: Int64) { acknowledged[key] = (value, revision) }
        func lost(_ a: String, _ b: String, _ value: String) { unacknowledgedTxns.append((a, b, value)) }
    }

    @Test func acknowledgedWritesSurviveKillNineInEveryRound() async throws {
        let rounds = Int(ProcessInfo.processInfo.environment["SWETCD_CRASH_ROUNDS"] ?? "") ?? 20
        let seed = UInt64(ProcessInfo.processInfo.environment["SWETCD_SEED"] ?? "") ?? UInt64.random(in: 0...UInt64.max)
        var generator = SeededRandom(seed: seed)
        let ledger = Ledger()
        // Chosen here so that no ServerProcess owns (and removes) it.
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-crash-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        var lastRevision: Int64 = 0
        for round in 0..<rounds {
            // Odd rounds keep every write out of the backend until the kill
            // (acknowledged from the WAL alone); even rounds commit often.
            let batch = round % 2 == 1 ? "1h" : "\(Int.random(in: 1...50, using: &generator))ms"
            let server = try ServerProcess(arguments: ["--backend-batch-interval", batch], dataDir: dataDir)
            let client = try EtcdClient(endpoints: [server.endpoint], timeout: 5)
            // After a restart everything acknowledged before must be there,
            // at its revision, and the revision must not have gone back.
            let status = try await client.status()
            #expect(status.header.revision >= lastRevision, "seed \(seed), round \(round): revision went back")
            let stored = try await Self.everything(client)
            for (key, (value, revision)) in await ledger.acknowledged {
                let kv = stored[key]
                #expect(kv?.valueString == value && kv?.modRevision == revision,
                        "seed \(seed), round \(round): \(key) acknowledged at \(revision) as \(value), found \(String(describing: kv))")
            }
            for (a, b, value) in await ledger.unacknowledgedTxns {
                let x = stored[a]?.valueString, y = stored[b]?.valueString
                #expect((x == value) == (y == value), "seed \(seed), round \(round): half of txn \(a), \(b) applied")
            }
            lastRevision = status.header.revision

            let writers = (0..<4).map { w in
                Task {
                    var n = 0
                    while !Task.isCancelled {
                        let value = "r\(round)-w\(w)-\(n)"
                        do {
                            if n % 3 == 2 {
                                let (a, b) = ("txn/\(value)/a", "txn/\(value)/b")
                                do {
                                    let r = try await client.txn(compare: [], success: [.put(Array(a.utf8), Array(value.utf8)),
                                                                                       .put(Array(b.utf8), Array(value.utf8))])
                                    await ledger.ack(a, value, r.header.revision)
                                    await ledger.ack(b, value, r.header.revision)
                                } catch {
                                    await ledger.lost(a, b, value)
                                    throw error
                                }
                            } else {
                                let key = "put/\(value)"
                                let r = try await client.put(key, value)
                                await ledger.ack(key, value, r.header.revision)
                            }
                        } catch {
                            return
                        }
                        n += 1
                    }
                }
            }
            // The kill comes once this round's writes are under way (however
            // slow the build), then at a random moment.
            let started = await ledger.acknowledged.count
            for _ in 0..<1_000 {
                if await ledger.acknowledged.count >= started + 5 { break }
                try await Task.sleep(nanoseconds: 10_000_000)
            }
            try await Task.sleep(nanoseconds: UInt64(generator.next() % 80) * 1_000_000)
            server.kill()
            for w in writers { await w.value }
            client.close()
        }
        let final = try ServerProcess(dataDir: dataDir)
        defer { final.stop() }
        let client = try EtcdClient(endpoints: [final.endpoint])
        defer { client.close() }
        let acknowledged = await ledger.acknowledged
        let stored = try await Self.everything(client)
        for (key, (value, revision)) in acknowledged {
            let kv = stored[key]
            #expect(kv?.valueString == value && kv?.modRevision == revision, "seed \(seed), after the last round: \(key)")
        }
        #expect(acknowledged.count >= rounds * 5, "writes were acknowledged in every round: \(acknowledged.count)")
    }
}

extension CrashTests {
    /// Every key in the store, by name, in one read.
    static func everything(_ client: EtcdClient) async throws -> [String: KeyValue] {
        var all: [String: KeyValue] = [:]
        for kv in try await client.get(.from([0])).kvs { all[kv.keyString] = kv }
        return all
    }
}

@Suite struct CheckpointTests {
    /// With small segments and frequent checkpoints the WAL stays small, and
    /// a member killed afterwards still has every write.
    @Test func checkpointsRemoveOldSegmentsAndLoseNothing() async throws {
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-ckpt-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let flags = ["--experimental-wal-segment-bytes", "65536", "--experimental-checkpoint-interval", "100ms", "--max-wals", "2"]
        let server = try ServerProcess(arguments: flags, dataDir: dataDir)
        let client = try EtcdClient(endpoints: [server.endpoint], connections: 2)
        let value = String(repeating: "v", count: 1_000)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<8 {
                group.addTask { for i in 0..<100 { try await client.put("ckpt/\(w)/\(i)", value) } }
            }
            try await group.waitForAll()
        }
        try await Task.sleep(nanoseconds: 600_000_000)  // a few checkpoints
        let segments = try FileManager.default.contentsOfDirectory(atPath: dataDir + "/member/wal").filter { $0.hasSuffix(".wal") }
        // --max-wals 2, and one more if the last checkpoint does not cover
        // the newest closed segment yet.
        #expect(segments.count <= 3, "800 KB of entries in 64 KB segments, checkpointed: \(segments.count) left")
        #expect(segments.sorted().first != "0000000000000000.wal", "the oldest segments are gone")
        if let curl = which("curl") {
            let metrics = try runCommand(curl, ["-s", "http://\(server.endpoint)/metrics"]).stdout
            let removed = metrics.split(separator: "\n").first { $0.hasPrefix("swetcd_wal_segments_removed_total ") }
            #expect((removed?.split(separator: " ").last).flatMap { Int($0) } ?? 0 > 0, "reported in /metrics")
        }
        client.close()
        server.kill()
        let again = try ServerProcess(arguments: flags, dataDir: dataDir)
        defer { again.stop() }
        let after = try EtcdClient(endpoints: [again.endpoint])
        defer { after.close() }
        var count = GetOptions()
        count.countOnly = true
        #expect(try await after.get(.prefix("ckpt/"), count).count == 800)
    }
}

extension CrashTests {
    /// A burst of puts starts a checkpoint every 32 MiB, not only every
    /// --experimental-checkpoint-interval (an hour here): the WAL drops
    /// segments the backend covers while the burst goes on.
    @Test func aBurstCheckpointsEveryFewMebibytes() async throws {
        let flags = ["--experimental-wal-segment-bytes", "1048576", "--experimental-checkpoint-interval", "1h", "--max-wals", "2"]
        let server = try ServerProcess(arguments: flags)
        defer { server.stop() }
        let client = try EtcdClient(endpoints: [server.endpoint], connections: 2)
        defer { client.close() }
        let value = [UInt8](repeating: 7, count: 256 << 10)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<4 {
                group.addTask { for i in 0..<80 { _ = try await client.put(Array("burst/\(w)/\(i)".utf8), value) } }
            }
            try await group.waitForAll()
        }
        // 80 MiB of values: at least two early checkpoints, each letting
        // the WAL drop the 1 MiB segments it covers (a checkpoint runs on
        // its own thread, so allow it a moment).
        var segments: [String] = []
        for _ in 0..<50 {
            segments = try FileManager.default.contentsOfDirectory(atPath: server.dataDir + "/member/wal").filter { $0.hasSuffix(".wal") }
            if segments.count < 60 { break }
            try await Task.sleep(nanoseconds: 100_000_000)
        }
        #expect(segments.count < 60, "80 MiB of entries in 1 MiB segments: \(segments.count) left, so no checkpoint ran")
    }
}

@Suite struct CompactionCrashTests {
    /// Kill -9 while a compaction deletes old revisions in the backend: the
    /// restarted member resumes it, keeps every key's newest version and
    /// its revision, refuses reads below the compaction, and answers the
    /// same HashKV as after a clean restart.
    @Test func aCompactionInterruptedByKillNineResumes() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let client = try EtcdClient(endpoints: [server.endpoint], connections: 2)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<8 {
                group.addTask { for i in stride(from: w, to: 40_000, by: 8) { _ = try await client.put("c\(i % 100)", "v\(i)") } }
            }
            try await group.waitForAll()
        }
        var latest: [String: String] = [:]
        for kv in try await client.get(.prefix(Array("c".utf8))).kvs { latest[kv.keyString] = kv.valueString }
        let revision = try await client.status().header.revision
        _ = try await client.compact(revision - 10)  // not physical: the backend part is still running
        server.kill()
        client.close()

        let restarted = try ServerProcess(dataDir: server.dataDir)
        let again = try EtcdClient(endpoints: [restarted.endpoint])
        #expect(try await again.status().header.revision == revision)
        for (key, value) in latest { #expect(try await again.get(key).kvs.first?.valueString == value, "\(key)") }
        let below = try Etcdctl(endpoint: restarted.endpoint).run("get", "c1", "--rev=\(revision - 20)")
        #expect(below.stderr.contains("etcdserver: mvcc: required revision has been compacted"), "\(below)")
        #expect(restarted.log.contains("opened the store"))
        let hash = try Etcdctl(endpoint: restarted.endpoint).run("endpoint", "hashkv", "--rev=\(revision)", "-w", "json").stdout
        again.close()
        restarted.stop()
        let third = try ServerProcess(dataDir: server.dataDir)
        defer { third.stop() }
        let hashAgain = try Etcdctl(endpoint: third.endpoint).run("endpoint", "hashkv", "--rev=\(revision)", "-w", "json").stdout
        func hashOf(_ json: String) -> String? { json.range(of: "\"hash\":").map { String(json[$0.upperBound...].prefix { $0.isNumber }) } }
        #expect(hashOf(hash) != nil && hashOf(hash) == hashOf(hashAgain), "\(hash) vs \(hashAgain)")
    }
}

@Suite struct LargeValueCrashTests {
    /// Values of every layout (whole, one overflow page and parts, several
    /// pages) written by several clients, compacted and defragmented, then
    /// kill -9 in the middle of more writes: the restarted member answers
    /// the same HashKV at the last revision seen before the kill, and every
    /// acknowledged value byte for byte.
    @Test func largeValuesSurviveKillNineWithTheirHashKV() async throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["SWETCD_SEED"] ?? "") ?? UInt64.random(in: 0...UInt64.max)
        let server = try ServerProcess(arguments: ["--backend-batch-interval", "5ms"])
        defer { server.stop() }
        let client = try EtcdClient(endpoints: [server.endpoint], connections: 2)
        let sizes = [100, 2_100, 3_000, 4_200, 8_300, 70_000]
        actor Acknowledged {
            var values: [String: [UInt8]] = [:]
            func record(_ key: String, _ value: [UInt8]) { values[key] = value }
        }
        let acknowledged = Acknowledged()
        func write(_ writer: Int, _ count: Int, _ label: String) async throws {
            var rng = SeededRandom(seed: seed &+ UInt64(writer) &+ UInt64(label.utf8.count))
            for i in 0..<count {
                // The cut-off writer puts each key once: a put whose answer
                // the kill lost may be in the store, over an earlier value.
                let key = writer == 9 ? "big/9/\(i)" : "big/\(writer)/\(i % 20)"
                let size = sizes[Int(rng.next() % UInt64(sizes.count))] + Int(rng.next() % 64)
                let value = (0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                _ = try await client.put(Array(key.utf8), value)
                await acknowledged.record(key, value)
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<4 { group.addTask { try await write(w, 150, "first") } }
            try await group.waitForAll()
        }
        let ctl = Etcdctl(endpoint: server.endpoint)
        let compactAt = try await client.status().header.revision - 100
        _ = try await client.compact(compactAt, physical: true)
        let defrag = try ctl.run("defrag")
        #expect(defrag.status == 0, "\(defrag)")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for w in 0..<4 { group.addTask { try await write(w, 60, "second") } }
            try await group.waitForAll()
        }
        let revision = try await client.status().header.revision
        let hash = try ctl.run("endpoint", "hashkv", "--rev=\(revision)", "-w", "json").stdout
        let expected = await acknowledged.values
        // More writes, cut off by the kill.
        let cutOff = Task { try? await write(9, 1_000_000, "cut off") }
        try await Task.sleep(nanoseconds: 50_000_000)
        server.kill()
        _ = await cutOff.value
        client.close()

        let restarted = try ServerProcess(dataDir: server.dataDir)
        defer { restarted.stop() }
        let again = try EtcdClient(endpoints: [restarted.endpoint])
        defer { again.close() }
        let hashAgain = try Etcdctl(endpoint: restarted.endpoint).run("endpoint", "hashkv", "--rev=\(revision)", "-w", "json").stdout
        func hashOf(_ json: String) -> String? { json.range(of: "\"hash\":").map { String(json[$0.upperBound...].prefix { $0.isNumber }) } }
        #expect(hashOf(hash) != nil && hashOf(hash) == hashOf(hashAgain), "seed \(seed): \(hash) vs \(hashAgain)")
        for (key, value) in expected {
            var atRevision = GetOptions()
            atRevision.revision = revision
            let stored = try await again.get(key, atRevision).kvs.first?.value
            #expect(stored == value, "seed \(seed): \(key) has \(stored?.count ?? -1) bytes, not the \(value.count) acknowledged")
        }
        for (key, value) in await acknowledged.values where key.hasPrefix("big/9/") {
            #expect(try await again.get(key).kvs.first?.value == value, "seed \(seed): \(key), acknowledged before the kill")
        }
    }
}
