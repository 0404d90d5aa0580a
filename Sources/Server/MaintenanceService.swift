import COpenSSL
import EtcdProto
import EtcdStatus
import Foundation
import MVCC
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

    /// Copies the committed backend on a thread of its own, then streams the
    /// copy in 32 KiB chunks as flow control allows, followed by its SHA-256
    /// (as etcd does, so `etcdctl snapshot save` can verify it).
    private func startSnapshot(_ call: GRPCCall, _ key: Metrics.CallKey) {
        metrics.callStarted(key)
        guard passes(call, key, { try authorizeAdmin(call) }) else { return }
        do {
            try store.commit()  // every acknowledged write is in the copy
        } catch {
            finish(call, key, status: GRPCStatus(.internal, "snapshot: \(error)"))
            return
        }
        snapshotsInProgress += 1
        let path = config.dataDir + "/member/snap/snapshot-\(UInt64.random(in: 0...UInt64.max)).tmp"
        let header = self.header()
        let copier = backend.copier
        let bound = LoopBound((server: self, call: call, key: key))
        let loop = self.loop
        runOnNewThread {
            unlink(path)
            let result = Result { try copier.copy(to: path) }.mapError { "\($0)" }
            loop.execute {
                let (server, call, key) = bound.value
                server.snapshotsInProgress -= 1
                switch result {
                case .success:
                    SnapshotStream(path: path, header: header, call: call, server: server, key: key).start()
                case .failure(let why):
                    unlink(path)
                    server.finish(call, key, status: GRPCStatus(.internal, "snapshot copy failed: \(why)"))
                }
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

/// Streams one snapshot file to one call, pulled by the call's flow control.
final class SnapshotStream {
    static let chunkBytes = 32 * 1024
    let path: String
    let header: Etcdserverpb_ResponseHeader
    let call: GRPCCall
    unowned let server: EtcdServer
    let key: Metrics.CallKey
    private var fd: Int32 = -1
    private var total = 0
    private var sent = 0
    private var digest: OpaquePointer?

    init(path: String, header: Etcdserverpb_ResponseHeader, call: GRPCCall, server: EtcdServer, key: Metrics.CallKey) {
        self.path = path
        self.header = header
        self.call = call
        self.server = server
        self.key = key
    }

    func start() {
        fd = open(path, O_RDONLY)
        var st = stat()
        guard fd >= 0, fstat(fd, &st) == 0 else {
            end(GRPCStatus(.internal, "snapshot: cannot open the copy"))
            return
        }
        unlink(path)  // the open descriptor keeps it readable
        total = Int(st.st_size)
        digest = EVP_MD_CTX_new()
        EVP_DigestInit_ex(digest, EVP_sha256(), nil)
        // The stream keeps itself alive through these closures until it ends.
        call.onWritable = { [self] in produce() }
        call.onClose = { [self] in release() }
        produce()
    }

    private func produce() {
        var buffer = [UInt8](repeating: 0, count: Self.chunkBytes)
        while !call.isClosed && call.queuedBytes < GRPCCall.lowWaterBytes {
            if sent == total {
                var sha = [UInt8](repeating: 0, count: 32)
                var length: UInt32 = 0
                EVP_DigestFinal_ex(digest, &sha, &length)
                send(blob: Array(sha.prefix(Int(length))), remaining: 0)
                end(.ok)
                return
            }
            let n = read(fd, &buffer, min(Self.chunkBytes, total - sent))
            guard n > 0 else {
                end(GRPCStatus(.internal, "snapshot: read failed"))
                return
            }
            EVP_DigestUpdate(digest, buffer, n)
            sent += n
            send(blob: Array(buffer.prefix(n)), remaining: total - sent)
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
        if fd >= 0 { close(fd) }
        fd = -1
        if let digest { EVP_MD_CTX_free(digest) }
        digest = nil
        call.onWritable = nil
        call.onClose = nil
    }
}
