import EtcdClient
import EtcdProto
import Foundation
import Synchronization
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
    /// Four writers driven by callbacks on the client's own loop thread:
    /// each call starts the next, so they keep writing even while the test
    /// process's few cooperative threads are held by other tests' blocking
    /// waits (as tasks here did not: under the full suite they were starved
    /// for a minute).
    final class Writers: @unchecked Sendable {
        struct Ledger {
            var acknowledged: [String: (value: String, revision: Int64)] = [:]
            var firstError: String?
            var stopped = false
        }
        let ledger = Locked(Ledger())

        func start(_ client: EtcdClient, count: Int) {
            client.onLoop { for w in 0..<count { self.write(client, w, 0) } }
        }

        func stop() { ledger.withLock { $0.stopped = true } }

        /// Puts to keys written again and again (the last acknowledged value
        /// must win), and every fourth call a txn of two new keys.
        private func write(_ client: EtcdClient, _ w: Int, _ n: Int) {
            guard !ledger.withLock({ $0.stopped }) else { return }
            let value = "w\(w)-\(n)"
            let keys = n % 4 == 3 ? ["txn/\(value)/a", "txn/\(value)/b"] : ["put/\(w)/\(n % 50)"]
            let path: String, request: [UInt8]
            if keys.count == 2 {
                var t = Etcdserverpb_TxnRequest()
                t.success = keys.map { key in
                    var put = Etcdserverpb_PutRequest()
                    (put.key, put.value) = (Data(key.utf8), Data(value.utf8))
                    var op = Etcdserverpb_RequestOp()
                    op.requestPut = put
                    return op
                }
                (path, request) = ("/etcdserverpb.KV/Txn", try! t.serializedBytes())
            } else {
                var put = Etcdserverpb_PutRequest()
                (put.key, put.value) = (Data(keys[0].utf8), Data(value.utf8))
                (path, request) = ("/etcdserverpb.KV/Put", try! put.serializedBytes())
            }
            client.startUnary(path, request) { result in
                switch result {
                case .success(let bytes):
                    let revision = keys.count == 2 ? (try? Etcdserverpb_TxnResponse(serializedBytes: bytes))?.header.revision
                        : (try? Etcdserverpb_PutResponse(serializedBytes: bytes))?.header.revision
                    self.ledger.withLock { l in
                        guard let revision else { return l.firstError = l.firstError ?? "an undecodable response" }
                        for key in keys { l.acknowledged[key] = (value, revision) }
                    }
                case .failure(let error):
                    // A loaded machine's call may time out: the writer goes on, as clients do.
                    self.ledger.withLock { l in if l.firstError == nil { l.firstError = "\(error)" } }
                }
                self.write(client, w, n + 1)
            }
        }
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

        let writers = Writers()
        let client = try EtcdClient(endpoints: [etcd.endpoint], timeout: 5, user: "root", password: "rootpw")
        writers.start(client, count: 4)
        // The kill comes at a random moment once writes are flowing (the
        // first login and connection can take seconds on a loaded machine).
        let deadline = Date().addingTimeInterval(60)
        while writers.ledger.withLock({ $0.acknowledged.count }) < 100 && Date() < deadline { usleep(20_000) }
        usleep(useconds_t(rng.next() % 500) * 1_000)
        writers.stop()
        etcd.kill()
        client.close()
        let (acknowledged, writerError) = writers.ledger.withLock { ($0.acknowledged, $0.firstError ?? "nothing") }
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
