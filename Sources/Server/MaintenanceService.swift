import COpenSSL
import EtcdProto
import EtcdStatus
import Foundation
import MVCC
import Snapshot
import Synchronization
import Transport
#if canImport(Glibc)
import Glibc
#endif

/// etcdserverpb.Maintenance: Status, Hash, HashKV, Alarm, Defragment,
/// Snapshot.
extension EtcdServer {
    func registerMaintenance() {
        let m = "etcdserverpb.Maintenance"
        unary(m, "Status", access: .authenticated) { [unowned self] (_: Etcdserverpb_StatusRequest, _) -> Reply<Etcdserverpb_StatusResponse> in
            var r = Etcdserverpb_StatusResponse()
            r.header = header()
            r.version = ServerVersion.server
            r.dbSize = Int64(backend.fileSize)
            r.dbSizeInUse = Int64(backend.sizeInUse)
            r.leader = member.leader
            r.raftIndex = member.commitIndex
            r.raftTerm = member.term
            r.raftAppliedIndex = appliedIndex
            r.dbSizeQuota = config.quotaBackendBytes
            r.errors = alarms.sorted().map(Self.alarmDescription)
            return .now(r)
        }
        unary(m, "Hash", access: .admin) { [unowned self] (_: Etcdserverpb_HashRequest, _) -> Reply<Etcdserverpb_HashResponse> in
            try store.commit()
            var r = Etcdserverpb_HashResponse()
            r.header = header()
            r.hash = try store.hash()
            return .now(r)
        }
        unary(m, "HashKV", access: .admin) { [unowned self] (req: Etcdserverpb_HashKVRequest, _) -> Reply<Etcdserverpb_HashKVResponse> in
            .now(try hashKVResponse(revision: req.revision))
        }
        answeringLater(m, "Alarm", access: .anyone) { [unowned self] (req: Etcdserverpb_AlarmRequest, call, key) in
            // Anyone signed in may list alarms; only root may raise or clear one.
            guard passes(call, key, { try authorize(call, req.action == .get ? .authenticated : .admin) }) else { return }
            guard req.action != .get else {
                do {
                    return respond(call, key, try applyAlarm(req))
                } catch {
                    return finish(call, key, status: GRPCStatus(.internal, "\(error)"))
                }
            }
            guard let bytes = try? req.serializedBytes() as [UInt8] else { return }
            propose(.alarm, bytes, .alarm(req)) { [unowned self] outcome in reply(call, key, outcome) }
        }
        let defragmentKey = metrics.key(type: "unary", service: m, method: "Defragment")
        register(m, "Defragment", .unary) { [unowned self] call, _ in
            guard passes(call, defragmentKey, { try authorizeAdmin(call) }) else { return }
            defragment(call, defragmentKey)
        }
        answeringLater(m, "MoveLeader", access: .anyone) { [unowned self] (req: Etcdserverpb_MoveLeaderRequest, call, key) in
            moveLeader(to: req.targetID, call, key)
        }
        refuseUnbuilt(m, ["Downgrade"], needs: "clustering")
        let snapshotKey = metrics.key(type: "server_stream", service: m, method: "Snapshot")
        register(m, "Snapshot", .serverStreaming) { [unowned self] call, _ in
            startSnapshot(call, snapshotKey)
        }
    }

    /// etcd's MoveLeader: asked of the leader, for a voting member; answered
    /// once that member leads (checked every heartbeat interval, as etcd
    /// does), or refused when the call's deadline ends the wait (or, with no
    /// deadline, after two election timeouts, as Raft drops the transfer
    /// after one).
    private func moveLeader(to target: UInt64, _ call: GRPCCall, _ key: ServerMetrics.CallKey) {
        guard member.isLeader else {
            return finish(call, key, status: GRPCStatus(.failedPrecondition, EtcdMessage.notLeader))
        }
        guard member.isVoter(target) else {
            return finish(call, key, status: GRPCStatus(.failedPrecondition, EtcdMessage.badLeaderTransferee))
        }
        member.transferLeadership(to: target)
        let interval = Double(config.heartbeatIntervalMs) / 1000
        var waited = 0.0
        let limit = 2 * Double(config.electionTimeoutMs) / 1000
        func check() -> Bool {
            if call.isClosed { return true }
            if member.leader == target {
                var r = Etcdserverpb_MoveLeaderResponse()
                r.header = header()
                respond(call, key, r)
                return true
            }
            if waited >= limit {
                finish(call, key, status: GRPCStatus(.unknown, EtcdMessage.leaderTransferTimedOut))
                return true
            }
            return false
        }
        if check() { return }
        let id = nextLeaderMoveID
        nextLeaderMoveID += 1
        leaderMoves[id] = loop.schedule(every: interval) { [unowned self] in
            waited += interval
            if check() { leaderMoves[id] = nil }
        }
    }

    /// etcd's snapshot: a bbolt file with etcd's buckets, built on a thread
    /// of its own from one read transaction of the committed backend
    /// (writes go on meanwhile) and handed to the loop in 1 MiB chunks, at
    /// most `SnapshotStream.bytesInFlight` ahead of what the call has sent
    /// (the thread waits; nothing goes to disk), then streamed in 32 KiB
    /// messages as flow control allows, followed by its SHA-256 (as etcd's,
    /// so `etcdctl snapshot save` and `restore` verify it).
    private func startSnapshot(_ call: GRPCCall, _ key: ServerMetrics.CallKey) {
        guard passes(call, key, { try authorizeAdmin(call) }) else { return }
        do {
            try store.commit()  // every acknowledged write is in the snapshot
        } catch {
            finish(call, key, status: GRPCStatus(.internal, "snapshot: \(error)"))
            return
        }
        snapshotsInProgress += 1
        let cluster = EtcdSnapshot.Cluster(
            members: membership.sorted.map {
                EtcdSnapshot.Member(id: $0.id, name: $0.name, peerURLs: $0.peerURLs, clientURLs: $0.clientURLs, isLearner: $0.isLearner)
            },
            removed: membership.removed.sorted(), version: ServerVersion.cluster, term: member.term)
        let stream = SnapshotStream(header: header(), call: call, server: self, key: key)
        stream.start()
        let bound = LoopBound((server: self, stream: stream))
        let shared = stream.shared
        let copier = backend.copier
        let loop = self.loop
        runOnNewThread {
            var chunk: [UInt8] = []
            chunk.reserveCapacity(SnapshotStream.handOverBytes)
            func handOver() throws {
                // Waits (off the loop) while the call is that far behind.
                while shared.inFlight.load(ordering: .acquiring) >= SnapshotStream.bytesInFlight {
                    if shared.cancelled.load(ordering: .relaxed) { throw "the call ended" }
                    usleep(500)
                }
                if shared.cancelled.load(ordering: .relaxed) { throw "the call ended" }
                shared.inFlight.add(chunk.count, ordering: .releasing)
                let bytes = LoopBound(chunk)
                loop.execute { bound.value.stream.append(bytes.value) }
                chunk = []
                chunk.reserveCapacity(SnapshotStream.handOverBytes)
            }
            let result = Result {
                _ = try copier.read { state in
                    try EtcdSnapshot.write(state, cluster: cluster, plan: { total in
                        loop.execute { bound.value.stream.planned(total) }
                    }) { page in
                        chunk += page
                        if chunk.count >= SnapshotStream.handOverBytes { try handOver() }
                    }
                }
                if !chunk.isEmpty { try handOver() }
            }.mapError { "\($0)" }
            loop.execute {
                bound.value.server.snapshotsInProgress -= 1
                bound.value.stream.written(result)
            }
        }
    }
}

extension Result where Failure == Error {
    init(_ body: () throws -> Success) {
        do { self = .success(try body()) } catch { self = .failure(error) }
    }
}

extension String: @retroactive Error {}

/// Streams a snapshot to one call while it is being written: pulled by the
/// call's flow control, it sends the chunks the writer has handed over and
/// waits for more; the SHA-256 of the whole follows.
final class SnapshotStream {
    static let chunkBytes = 32 * 1024
    /// What the writer's thread gathers before handing it to the loop.
    static let handOverBytes = 1 << 20
    /// The most the writer runs ahead of what the call has sent.
    static let bytesInFlight = 8 << 20
    let header: Etcdserverpb_ResponseHeader
    let call: GRPCCall
    unowned let server: EtcdServer
    let key: ServerMetrics.CallKey
    /// What the writer's thread and the loop share: bytes handed over and
    /// not yet sent, and whether the call ended first.
    let shared = Shared()
    private var chunks: [[UInt8]] = []
    private var offset = 0  // into chunks[0]
    private var total: Int?
    private var writerResult: Result<Void, String>?
    private var sent = 0
    private var digest: OpaquePointer?
    private let started = monotonicNanoseconds()

    final class Shared: Sendable {
        let inFlight = Atomic<Int>(0)
        let cancelled = Atomic<Bool>(false)
    }

    init(header: Etcdserverpb_ResponseHeader, call: GRPCCall, server: EtcdServer, key: ServerMetrics.CallKey) {
        self.header = header
        self.call = call
        self.server = server
        self.key = key
    }

    func start() {
        digest = EVP_MD_CTX_new()
        EVP_DigestInit_ex(digest, EVP_sha256(), nil)
        // The stream keeps itself alive through these closures until it ends.
        call.onWritable = { [self] in produce() }
        call.onClose = { [self] in release() }
    }

    /// The writer's notices, on the loop.
    func planned(_ size: Int) {
        total = size
        server.logger.info("sending database snapshot to client", metadata: ["total-bytes": "\(size)"])
    }

    func append(_ chunk: [UInt8]) {
        guard digest != nil else { return }  // ended
        chunks.append(chunk)
        produce()
    }

    func written(_ result: Result<Void, String>) {
        writerResult = result
        produce()
    }

    private func produce() {
        guard digest != nil else { return }
        while !call.isClosed && call.queuedBytes < GRPCCall.lowWaterBytes {
            if let head = chunks.first, let total {
                let n = min(Self.chunkBytes, head.count - offset)
                let piece = Data(head[offset..<(offset + n)])
                piece.withUnsafeBytes { _ = EVP_DigestUpdate(digest, $0.baseAddress, n) }
                sent += n
                offset += n
                if offset == head.count {
                    chunks.removeFirst()
                    offset = 0
                    shared.inFlight.subtract(head.count, ordering: .releasing)
                }
                send(blob: piece, remaining: total - sent)
                continue
            }
            switch writerResult {
            case nil:
                return  // more when the writer has handed it over
            case .failure(let why):
                end(GRPCStatus(.internal, "snapshot: \(why)"))
            case .success:
                guard sent == total else {
                    end(GRPCStatus(.internal, "snapshot: wrote \(sent) bytes of \(total ?? 0)"))
                    return
                }
                var sha = [UInt8](repeating: 0, count: 32)
                var length: UInt32 = 0
                EVP_DigestFinal_ex(digest, &sha, &length)
                send(blob: Data(sha.prefix(Int(length))), remaining: 0)
                server.metrics.snapshotDurations.observe(nanoseconds: monotonicNanoseconds() - started)
                server.logger.info("sent database snapshot to client", metadata: [
                    "bytes": "\(sent)", "took": EtcdServer.took(since: started)])
                end(.ok)
            }
            return
        }
    }

    private func send(blob: Data, remaining: Int) {
        var r = Etcdserverpb_SnapshotResponse()
        r.header = header
        r.remainingBytes = UInt64(remaining)
        r.blob = blob
        r.version = ServerVersion.server
        if let bytes: [UInt8] = try? r.serializedBytes() { call.send(bytes) }
    }

    private func end(_ status: GRPCStatus) {
        server.finish(call, key, status: status)
        release()
    }

    private func release() {
        shared.cancelled.store(true, ordering: .relaxed)
        chunks = []
        if let digest { EVP_MD_CTX_free(digest) }
        digest = nil
        call.onWritable = nil
        call.onClose = nil
    }
}
