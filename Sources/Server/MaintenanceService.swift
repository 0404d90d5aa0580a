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
            metrics.callStarted(defragmentKey)
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
    private func moveLeader(to target: UInt64, _ call: GRPCCall, _ key: Metrics.CallKey) {
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
    /// (writes go on meanwhile) into an unlinked file in the data dir, and
    /// streamed to the call as it is written, in 32 KiB chunks as flow
    /// control allows, followed by its SHA-256 (as etcd's, so `etcdctl
    /// snapshot save` and `restore` verify it).
    private func startSnapshot(_ call: GRPCCall, _ key: Metrics.CallKey) {
        metrics.callStarted(key)
        guard passes(call, key, { try authorizeAdmin(call) }) else { return }
        do {
            try store.commit()  // every acknowledged write is in the snapshot
        } catch {
            finish(call, key, status: GRPCStatus(.internal, "snapshot: \(error)"))
            return
        }
        let path = config.dataDir + "/member/snap/snapshot-\(UInt64.random(in: 0...UInt64.max)).tmp"
        let writeFD = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        let readFD = writeFD >= 0 ? open(path, O_RDONLY) : -1
        unlink(path)  // the descriptors keep it; nothing is left behind by a crash
        guard writeFD >= 0, readFD >= 0 else {
            if writeFD >= 0 { close(writeFD) }
            finish(call, key, status: GRPCStatus(.internal, "snapshot: cannot create \(path): \(String(cString: strerror(errno)))"))
            return
        }
        snapshotsInProgress += 1
        let cluster = EtcdSnapshot.Cluster(
            members: membership.sorted.map {
                EtcdSnapshot.Member(id: $0.id, name: $0.name, peerURLs: $0.peerURLs, clientURLs: $0.clientURLs, isLearner: $0.isLearner)
            },
            removed: membership.removed.sorted(), version: ServerVersion.cluster, term: member.term)
        let stream = SnapshotStream(fd: readFD, header: header(), call: call, server: self, key: key)
        stream.start()
        let bound = LoopBound((server: self, stream: stream))
        let cancelled = stream.cancelled
        let copier = backend.copier
        let loop = self.loop
        runOnNewThread {
            defer { close(writeFD) }
            var buffer: [UInt8] = []
            buffer.reserveCapacity(SnapshotStream.writeBytes)
            var written = 0
            func flush() throws {
                let n = buffer.withUnsafeBytes { pwrite(writeFD, $0.baseAddress, $0.count, off_t(written)) }
                guard n == buffer.count else { throw "write: \(String(cString: strerror(errno)))" }
                written += n
                buffer.removeAll(keepingCapacity: true)
                let available = written
                loop.execute { bound.value.stream.available(available) }
                if cancelled.isSet { throw "the call ended" }
            }
            let result = Result {
                _ = try copier.read { state in
                    try EtcdSnapshot.write(state, cluster: cluster, plan: { total in
                        loop.execute { bound.value.stream.planned(total) }
                    }) { page in
                        buffer += page
                        if buffer.count >= SnapshotStream.writeBytes { try flush() }
                    }
                }
                try flush()
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

/// Streams a snapshot file to one call while it is being written: pulled
/// by the call's flow control, it sends what the writer has made available
/// and waits for more; the SHA-256 of the whole follows.
final class SnapshotStream {
    static let chunkBytes = 32 * 1024
    /// How much the writer gathers before each write and notice.
    static let writeBytes = 1 << 20
    let header: Etcdserverpb_ResponseHeader
    let call: GRPCCall
    unowned let server: EtcdServer
    let key: Metrics.CallKey
    /// Set when the call ends first: the writer stops at its next write.
    let cancelled = Cancellation()
    private var fd: Int32
    private var total: Int?
    private var availableBytes = 0
    private var writerResult: Result<Void, String>?
    private var sent = 0
    private var digest: OpaquePointer?

    final class Cancellation: Sendable {
        let flag = Atomic<Bool>(false)
        var isSet: Bool { flag.load(ordering: .relaxed) }
    }

    init(fd: Int32, header: Etcdserverpb_ResponseHeader, call: GRPCCall, server: EtcdServer, key: Metrics.CallKey) {
        self.fd = fd
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
    func planned(_ size: Int) { total = size }

    func available(_ bytes: Int) {
        availableBytes = bytes
        produce()
    }

    func written(_ result: Result<Void, String>) {
        writerResult = result
        produce()
    }

    private func produce() {
        guard fd >= 0 else { return }
        var buffer = [UInt8](repeating: 0, count: Self.chunkBytes)
        while !call.isClosed && call.queuedBytes < GRPCCall.lowWaterBytes {
            if sent < availableBytes, let total {
                let n = pread(fd, &buffer, min(Self.chunkBytes, availableBytes - sent), off_t(sent))
                guard n > 0 else {
                    end(GRPCStatus(.internal, "snapshot: read failed"))
                    return
                }
                EVP_DigestUpdate(digest, buffer, n)
                sent += n
                send(blob: Array(buffer.prefix(n)), remaining: total - sent)
                continue
            }
            switch writerResult {
            case nil:
                return  // more when the writer has written it
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
                send(blob: Array(sha.prefix(Int(length))), remaining: 0)
                end(.ok)
            }
            return
        }
    }

    private func send(blob: [UInt8], remaining: Int) {
        var r = Etcdserverpb_SnapshotResponse()
        r.header = header
        r.remainingBytes = UInt64(remaining)
        r.blob = Data(blob)
        r.version = ServerVersion.server
        if let bytes: [UInt8] = try? r.serializedBytes() { call.send(bytes) }
    }

    private func end(_ status: GRPCStatus) {
        server.finish(call, key, status: status)
        release()
    }

    private func release() {
        cancelled.flag.store(true, ordering: .relaxed)
        if fd >= 0 { close(fd) }
        fd = -1
        if let digest { EVP_MD_CTX_free(digest) }
        digest = nil
        call.onWritable = nil
        call.onClose = nil
    }
}
