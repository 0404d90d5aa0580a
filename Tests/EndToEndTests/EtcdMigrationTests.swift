import EtcdClient
import Foundation
import Testing
import TestSupport

/// `swetcd migrate` from the data dir of a real etcd killed with -9 while
/// four clients write: every write etcd acknowledged is there, at its
/// revision, and swetcd serves what that etcd serves when it starts again
/// on a copy of the same data dir (keys, history, HashKV, the lease, users
/// and permissions). etcd 3.4 runs with its default backend batching (a WAL
/// tail after the backend's index); etcd 3.5 holds every write out of its
/// backend (everything after the start comes from the WAL: puts, deletes,
/// the compaction, the lease, auth changes and simple-token logins).
@Suite struct EtcdMigrationTests {
    actor Ledger {
        var acknowledged: [String: (value: String, revision: Int64)] = [:]
        var firstError: String?
        /// Set at the kill: the writers stop.
        var stopped = false
        func stop() { stopped = true }
        func ack(_ key: String, _ value: String, _ revision: Int64) { acknowledged[key] = (value, revision) }
        func failed(_ error: Error) { if firstError == nil { firstError = "\(error)" } }
    }

    @Test(arguments: zip([EtcdRelease.v3_4, EtcdRelease.v3_5], [false, true]))
    func migrateAnEtcdKilledUnderWrites(_ release: EtcdRelease, holdingTheBackend: Bool) async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-migrate-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)

        let hold = holdingTheBackend ? ["--backend-batch-interval", "1h", "--backend-batch-limit", "10000000"] : []
        let etcd = try ReferenceEtcd(arguments: hold, release: release, dataDir: dir + "/etcd")
        defer { etcd.stop() }
        let (compactAt, leaseID) = try EtcdSnapshotRoundTripTests.populate(etcd.etcdctl, &rng)

        let ledger = Ledger()
        let client = try EtcdClient(endpoints: [etcd.endpoint], timeout: 5, user: "root", password: "rootpw")
        let writers = (0..<4).map { w in
            Task {
                var n = 0
                while await !ledger.stopped {
                    let value = "w\(w)-\(n)"
                    do {
                        if n % 4 == 3 {
                            let (a, b) = ("txn/\(value)/a", "txn/\(value)/b")
                            let r = try await client.txn(compare: [], success: [.put(Array(a.utf8), Array(value.utf8)),
                                                                               .put(Array(b.utf8), Array(value.utf8))])
                            await ledger.ack(a, value, r.header.revision)
                            await ledger.ack(b, value, r.header.revision)
                        } else {
                            // Keys written again and again: the last acknowledged value must win.
                            let key = "put/\(w)/\(n % 50)"
                            let r = try await client.put(key, value)
                            await ledger.ack(key, value, r.header.revision)
                        }
                    } catch {
                        // A loaded machine's client may time out or
                        // reconnect: it tries again, as clients do.
                        await ledger.failed(error)
                        try? await Task.sleep(nanoseconds: 20_000_000)
                    }
                    n += 1
                }
            }
        }
        // The kill comes at a random moment once writes are flowing (the
        // first login and connection can take seconds on a loaded machine).
        let deadline = Date().addingTimeInterval(60)
        while await ledger.acknowledged.count < 100 && Date() < deadline {
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        try await Task.sleep(nanoseconds: UInt64(rng.next() % 500) * 1_000_000)
        await ledger.stop()
        etcd.kill()
        for w in writers { await w.value }
        client.close()
        let acknowledged = await ledger.acknowledged
        let writerError = await ledger.firstError ?? "nothing"
        #expect(acknowledged.count > 50, "seed \(seed): \(acknowledged.count) writes acknowledged before the kill; first client error: \(writerError)")

        try #require(runCommand("/bin/cp", ["-a", dir + "/etcd", dir + "/etcd-again"]).status == 0)
        // The backend file alone restores too, as etcd's, only with
        // --skip-hash-check (it has no SHA-256 after it).
        let db = dir + "/etcd/member/snap/db"
        let refused = try runCommand(ServerProcess.executable, ["snapshot", "restore", db, "--data-dir", dir + "/from-db"])
        #expect(refused.status != 0 && refused.stderr.contains("snapshot missing hash but --skip-hash-check=false"), "\(refused)")
        let fromDB = try runCommand(ServerProcess.executable, ["snapshot", "restore", db, "--skip-hash-check", "--data-dir", dir + "/from-db"])
        #expect(fromDB.status == 0, "\(fromDB)")
        let migrated = try runCommand(ServerProcess.executable, ["migrate", "--from-etcd-data-dir", dir + "/etcd", "--data-dir", dir + "/swetcd"])
        try #require(migrated.status == 0, "\(migrated)")
        #expect(migrated.stdout.contains("writes from etcd's WAL to replay"), "\(migrated)")

        let server = try ServerProcess(dataDir: dir + "/swetcd")
        defer { server.stop() }
        let ours = try EtcdSnapshotRoundTripTests.State(of: Etcdctl(endpoint: server.endpoint, binary: release.etcdctl),
                                                        compactAt: compactAt, leaseID: leaseID)
        let reader = try EtcdClient(endpoints: [server.endpoint], user: "root", password: "rootpw")
        defer { reader.close() }
        let stored = try await CrashTests.everything(reader)
        var missing: [String] = []
        for (key, (value, revision)) in acknowledged.sorted(by: { $0.key < $1.key }) {
            // A later write to the key, sent before the kill but never
            // answered, may have landed after it.
            let kv = stored[key]
            let kept = kv.map { $0.modRevision > revision || ($0.modRevision == revision && $0.valueString == value) } ?? false
            if !kept {
                missing.append("\(key)=\(value)@\(revision), found \(kv.map { "\($0.valueString)@\($0.modRevision)" } ?? "nothing")")
            }
        }
        #expect(missing.isEmpty, "seed \(seed): \(missing.count) of \(acknowledged.count) acknowledged writes lost: \(missing.prefix(5))")

        let again = try ReferenceEtcd(release: release, dataDir: dir + "/etcd-again", peerPort: etcd.peerPort, user: "root:rootpw")
        defer { again.stop() }
        let theirs = try EtcdSnapshotRoundTripTests.State(of: again.etcdctl, compactAt: compactAt, leaseID: leaseID)
        #expect(ours == theirs, "seed \(seed): swetcd migrated from \(release) differs: \(ours.differences(from: theirs))")
    }
}
