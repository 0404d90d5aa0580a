import EtcdProto
import EtcdStatus
import SwiftProtobuf
import MVCC
import Transport
import Synchronization
import V2Store
import WAL

/// What a log entry asks the store to do; the raw value is on disk.
enum LogEntryKind: UInt8 {
    case put = 1
    case deleteRange = 2
    case txn = 3
    case compact = 4
    case leaseGrant = 5
    case leaseRevoke = 6
    /// A change to the v2 keys store (`V2Request`'s encoding).
    case v2 = 7
}

/// A log entry's request, decoded: once when it is proposed (the apply
/// reuses it), or from the log's bytes on replay.
enum DecodedWrite {
    case put(PutRequest)
    case deleteRange(Etcdserverpb_DeleteRangeRequest)
    case txn(Etcdserverpb_TxnRequest)
    case compact(Etcdserverpb_CompactionRequest)
    /// The ID is always set: the member picks one before proposing.
    case leaseGrant(Etcdserverpb_LeaseGrantRequest)
    case leaseRevoke(Etcdserverpb_LeaseRevokeRequest)
    case v2(V2Request)

    init(_ kind: LogEntryKind, _ bytes: [UInt8]) throws {
        switch kind {
        case .put:
            guard let p = bytes.withUnsafeBytes({ PutRequest(encoded: $0) }) else {
                throw BinaryDecodingError.malformedProtobuf
            }
            self = .put(p)
        case .deleteRange: self = .deleteRange(try Etcdserverpb_DeleteRangeRequest(serializedBytes: bytes))
        case .txn: self = .txn(try Etcdserverpb_TxnRequest(serializedBytes: bytes))
        case .compact: self = .compact(try Etcdserverpb_CompactionRequest(serializedBytes: bytes))
        case .leaseGrant: self = .leaseGrant(try Etcdserverpb_LeaseGrantRequest(serializedBytes: bytes))
        case .leaseRevoke: self = .leaseRevoke(try Etcdserverpb_LeaseRevokeRequest(serializedBytes: bytes))
        case .v2:
            guard let r = V2Request(encoded: bytes) else { throw BinaryDecodingError.malformedProtobuf }
            self = .v2(r)
        }
    }
}

/// One write as the log holds it: (term, index) as Raft will assign them,
/// and the client's request as it arrived.
struct LogEntry: Equatable {
    var term: UInt64
    var index: UInt64
    var kind: LogEntryKind
    var request: [UInt8]

    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(1 + 20 + request.count)
        out.append(kind.rawValue)
        WireBytes.appendVarint(term, to: &out)
        WireBytes.appendVarint(index, to: &out)
        out.append(contentsOf: request)
        return out
    }

    init(term: UInt64, index: UInt64, kind: LogEntryKind, request: [UInt8]) {
        self.term = term
        self.index = index
        self.kind = kind
        self.request = request
    }

    /// An encoded entry's kind, term and index, and where its request starts.
    private static func header(_ bytes: [UInt8]) -> (kind: LogEntryKind, term: UInt64, index: UInt64, body: Int)? {
        guard let first = bytes.first, let kind = LogEntryKind(rawValue: first) else { return nil }
        var at = 1
        guard let term = WireBytes.readVarint(bytes, at: &at),
              let index = WireBytes.readVarint(bytes, at: &at) else { return nil }
        return (kind, term, index, at)
    }

    /// The index of an encoded entry, without copying its request (the
    /// WAL asks this of every record it writes).
    static func index(ofEncoded bytes: [UInt8]) -> UInt64? { header(bytes)?.index }

    init?(decoding bytes: [UInt8]) {
        guard let h = Self.header(bytes) else { return nil }
        self.init(term: h.term, index: h.index, kind: h.kind, request: Array(bytes[h.body...]))
    }
}

/// The write path of DESIGN.md for one member: a write becomes a log entry,
/// is appended to the WAL and fsynced by the WAL's writer thread (grouped
/// with whatever else is waiting), and is then applied in log order and
/// answered. Linearizable reads wait until every write proposed before them
/// is applied. Raft will slot in between proposing and applying.
extension EtcdServer {
    /// Proposes a write; `reply` runs on the loop with the response bytes
    /// (or the status the apply ended with) once it is durable and applied.
    func propose(_ kind: LogEntryKind, _ request: [UInt8], _ decoded: DecodedWrite,
                 reply: @escaping (Result<GRPCMessageBuffer, GRPCStatus>) -> Void) {
        if let writesRefused {
            reply(.failure(writesRefused))
            return
        }
        if let refusal = quotaRefusal(for: decoded, requestBytes: request.count) {
            reply(.failure(refusal))
            return
        }
        proposedIndex += 1
        let entry = LogEntry(term: raftTerm, index: proposedIndex, kind: kind, request: request)
        awaitingDurability[entry.index] = (entry.index, decoded, reply)
        // A lone write: its answer (and, after it, the writer's next
        // request) is about one fsync away.
        if awaitingDurability.count == 1 && config.loneWritePoll > 0 { loop.poll(for: config.loneWritePoll) }
        let index = entry.index
        let mark = durableMark
        let me = LoopBound(self)
        let loop = self.loop
        walWriter.submit(WALRecord(type: .entry, data: entry.encoded())) { result in
            let failure: String? = { if case .failure(let e) = result { return "\(e)" } else { return nil } }()
            // One hop to the loop per group-committed batch, not per entry:
            // only the first completion since the loop last looked schedules it.
            guard mark.advance(to: index, failure: failure) else { return }
            loop.execute {
                let (through, failure) = mark.take()
                me.value.durable(through: through, failure: failure)
            }
        }
    }

    /// The WAL made everything through `index` durable (its writer keeps
    /// submission order): apply in order and answer. The backend commit
    /// comes later (`commitBackend`): the WAL already holds these writes,
    /// and reads on the loop see the open backend transaction.
    func durable(through index: UInt64, failure: String?) {
        if let failure {
            refuseWrites(because: "the WAL failed: \(failure)")
        }
        var replies: [(reply: (Result<GRPCMessageBuffer, GRPCStatus>) -> Void, outcome: Result<GRPCMessageBuffer, GRPCStatus>)] = []
        replies.reserveCapacity(Int(index - appliedIndex))
        // Watchers present now are the only ones these changes can be for.
        store.recordsChanges = !servedWatches.isEmpty
        while appliedIndex < index, let (entryIndex, decoded, reply) = awaitingDurability.removeValue(forKey: appliedIndex + 1) {
            if failure != nil {
                appliedIndex = entryIndex
                reply(.failure(writesRefused!))
                continue
            }
            store.setConsistentIndex(entryIndex)
            let outcome = apply(decoded)
            appliedIndex = entryIndex
            if case .compact(let c) = decoded, c.physical, case .success = outcome {
                afterCompaction { reply(outcome) }
            } else {
                replies.append((reply, outcome))
            }
        }
        dispatchAppliedChanges()
        for (reply, outcome) in replies { reply(outcome) }
        if replies.count == 1 && awaitingDurability.isEmpty && config.loneWritePoll > 0 { loop.poll(for: config.loneWritePoll) }
        releaseReads()
    }

    /// Applies one entry to the store: the response bytes, or the status.
    func apply(_ decoded: DecodedWrite) -> Result<GRPCMessageBuffer, GRPCStatus> {
        do {
            switch decoded {
            case .put(let p):
                let r = try store.put(p)
                return .success(try Wire.putResponse(r, header: header(revision: r.revision)).serializedBytes())
            case .deleteRange(let d):
                let r = try store.deleteRange(Wire.delete(d))
                return .success(try Wire.deleteResponse(r, header: header(revision: r.revision)).serializedBytes())
            case .txn(let t):
                let r = try store.txn(Wire.txn(t))
                return .success(try Wire.txnResponse(r, header: header(revision: r.revision)).serializedBytes())
            case .compact(let c):
                try store.compact(c.revision)
                logger.info("compaction scheduled", metadata: ["revision": "\(c.revision)"])
                startCompaction()
                var response = Etcdserverpb_CompactionResponse()
                response.header = header()
                return .success(try response.serializedBytes())
            case .leaseGrant(let g):
                return .success(try applyLeaseGrant(g).serializedBytes())
            case .leaseRevoke(let r):
                return .success(try applyLeaseRevoke(r).serializedBytes())
            case .v2(let r):
                return applyV2(r)
            }
        } catch let e as any EtcdStatusError {
            return .failure(GRPCStatus(e))
        } catch {
            return .failure(GRPCStatus(.internal, "apply: \(error)"))
        }
    }

    /// Serves `read` once everything proposed so far is applied.
    func afterProposedWrites(_ read: @escaping () -> Void) {
        if appliedIndex >= proposedIndex { read(); return }
        waitingReads.append((proposedIndex, read))
    }

    private func releaseReads() {
        guard !waitingReads.isEmpty else { return }
        let ready = waitingReads.filter { $0.0 <= appliedIndex }
        waitingReads.removeAll { $0.0 <= appliedIndex }
        for (_, read) in ready { read() }
    }

    /// Replays the WAL's entries the backend has not applied yet (after a
    /// crash), before serving anyone.
    func replay(_ records: [WALRecord]) throws {
        var replayed = 0
        for record in records where record.type == .entry {
            guard let entry = LogEntry(decoding: record.data) else {
                throw ServerError.dataDir(config.dataDir, "an undecodable WAL entry")
            }
            guard entry.index > appliedIndex else { continue }
            store.setConsistentIndex(entry.index)
            // A request that does not decode failed when it was first
            // applied too: it changes nothing now either.
            if let decoded = try? DecodedWrite(entry.kind, entry.request) { _ = apply(decoded) }
            appliedIndex = entry.index
            replayed += 1
        }
        proposedIndex = appliedIndex
        try store.commit()
        if replayed > 0 { logger.info("replayed the WAL", metadata: ["entries": "\(replayed)", "applied-index": "\(appliedIndex)"]) }
    }
}

/// The highest log index the WAL has made durable and the loop has not yet
/// been told about, shared by the WAL's writer thread and the loop.
final class DurableMark: Sendable {
    private let state = Mutex<(index: UInt64, failure: String?, scheduled: Bool)>((0, nil, false))

    /// Records `index` as durable; true when the caller should schedule the
    /// loop (no hop is pending yet).
    func advance(to index: UInt64, failure: String?) -> Bool {
        state.withLock { s in
            s.index = max(s.index, index)
            if let failure { s.failure = failure }
            defer { s.scheduled = true }
            return !s.scheduled
        }
    }

    /// What the loop should apply through, clearing the pending hop.
    func take() -> (UInt64, String?) {
        state.withLock { s in
            s.scheduled = false
            return (s.index, s.failure)
        }
    }
}
