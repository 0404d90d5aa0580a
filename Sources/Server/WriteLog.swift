import EtcdProto
import EtcdStatus
import SwiftProtobuf
import MVCC
import Transport
import Raft
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
    /// A member's name and client URLs (an etcdserverpb.Member), as each
    /// member publishes them when it starts (etcd's attribute publish).
    case memberAttributes = 8
    /// A change to users, roles or permissions (`AuthChange`'s encoding).
    case auth = 9
    /// An alarm raised or cleared (an etcdserverpb.AlarmRequest).
    case alarm = 10
    /// Leases' remaining TTLs, logged by the leader (an
    /// etcdserverpb.LeaseCheckpointRequest).
    case leaseCheckpoint = 11
}

/// A log entry's request, decoded: once when it is proposed (the apply
/// reuses it), or from the log's bytes on replay.
enum DecodedWrite {
    case put(PutRequest)
    case deleteRange(Etcdserverpb_DeleteRangeRequest)
    /// Converted once, when the request arrives (or its entry is read).
    case txn(TxnRequest)
    case compact(Etcdserverpb_CompactionRequest)
    /// The ID is always set: the member picks one before proposing.
    case leaseGrant(Etcdserverpb_LeaseGrantRequest)
    case leaseRevoke(Etcdserverpb_LeaseRevokeRequest)
    case v2(V2Request)
    case memberAttributes(Etcdserverpb_Member)
    case auth(AuthChange)
    case alarm(Etcdserverpb_AlarmRequest)
    case leaseCheckpoint(Etcdserverpb_LeaseCheckpointRequest)

    init(_ kind: LogEntryKind, _ bytes: [UInt8]) throws {
        switch kind {
        case .put:
            guard let p = bytes.withUnsafeBytes({ PutRequest(encoded: $0) }) else {
                throw BinaryDecodingError.malformedProtobuf
            }
            self = .put(p)
        case .deleteRange: self = .deleteRange(try Etcdserverpb_DeleteRangeRequest(serializedBytes: bytes))
        case .txn: self = .txn(try Wire.txn(Etcdserverpb_TxnRequest(serializedBytes: bytes)))
        case .compact: self = .compact(try Etcdserverpb_CompactionRequest(serializedBytes: bytes))
        case .leaseGrant: self = .leaseGrant(try Etcdserverpb_LeaseGrantRequest(serializedBytes: bytes))
        case .leaseRevoke: self = .leaseRevoke(try Etcdserverpb_LeaseRevokeRequest(serializedBytes: bytes))
        case .v2:
            guard let r = V2Request(encoded: bytes) else { throw BinaryDecodingError.malformedProtobuf }
            self = .v2(r)
        case .memberAttributes: self = .memberAttributes(try Etcdserverpb_Member(serializedBytes: bytes))
        case .auth:
            guard let c = AuthChange(encoded: bytes) else { throw BinaryDecodingError.malformedProtobuf }
            self = .auth(c)
        case .alarm: self = .alarm(try Etcdserverpb_AlarmRequest(serializedBytes: bytes))
        case .leaseCheckpoint: self = .leaseCheckpoint(try Etcdserverpb_LeaseCheckpointRequest(serializedBytes: bytes))
        }
    }
}

/// A write as the member proposes it: the entry's data in Raft's log. The
/// proposal ID lets the member that proposed it answer its client when the
/// entry is applied (IDs are unique per member and run, as etcd's).
///
///     kind u8, id u64 little-endian, request
struct ProposedRequest: Equatable {
    var kind: LogEntryKind
    var id: UInt64
    var request: [UInt8]

    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(9 + request.count)
        out.append(kind.rawValue)
        for shift in stride(from: 0, to: 64, by: 8) { out.append(UInt8(truncatingIfNeeded: id >> UInt64(shift))) }
        out.append(contentsOf: request)
        return out
    }

    init(kind: LogEntryKind, id: UInt64, request: [UInt8]) {
        self.kind = kind
        self.id = id
        self.request = request
    }

    init?(decoding bytes: [UInt8]) {
        guard let id = Self.id(ofEncoded: bytes), let kind = LogEntryKind(rawValue: bytes[0]) else { return nil }
        self.kind = kind
        self.id = id
        request = Array(bytes[9...])
    }

    /// An encoded proposal's ID, without copying its request.
    static func id(ofEncoded bytes: [UInt8]) -> UInt64? {
        guard bytes.count >= 9 else { return nil }
        var id: UInt64 = 0
        for i in 0..<8 { id |= UInt64(bytes[1 + i]) << UInt64(8 * i) }
        return id
    }
}

/// A write as the member before Raft logged it (WAL records of type
/// `entry`): read back from older data dirs and replayed as Raft entries.
struct LegacyLogEntry: Equatable {
    /// The term every entry of the member before Raft carried.
    static let term: UInt64 = 2
    var term: UInt64
    var index: UInt64
    var kind: LogEntryKind
    var request: [UInt8]

    func encoded() -> [UInt8] {
        var out: [UInt8] = [kind.rawValue]
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

    init?(decoding bytes: [UInt8]) {
        guard let first = bytes.first, let kind = LogEntryKind(rawValue: first) else { return nil }
        var at = 1
        guard let term = WireBytes.readVarint(bytes, at: &at), let index = WireBytes.readVarint(bytes, at: &at) else { return nil }
        self.init(term: term, index: index, kind: kind, request: Array(bytes[at...]))
    }

    /// The same write as a Raft entry (no proposer waits for it).
    var raftEntry: Entry {
        Entry(term: term, index: index, data: ProposedRequest(kind: kind, id: 0, request: request).encoded())
    }
}

/// The write path of DESIGN.md: a write becomes a proposal to the member's
/// Raft log; once committed (made durable by the WAL first) it is applied in
/// log order and, on the member that proposed it, answered. Linearizable
/// reads are served once everything committed when they arrived is applied
/// (ReadIndex).
extension EtcdServer {
    /// Proposes a write; `reply` runs on the loop with the response bytes
    /// (or the status the apply ended with) once it is committed and applied.
    func propose(_ kind: LogEntryKind, _ request: [UInt8], _ decoded: DecodedWrite,
                 reply: @escaping (Result<GRPCMessageBuffer, GRPCStatus>) -> Void) {
        if let writesRefused {
            reply(.failure(writesRefused))
            return
        }
        if refusedForCorruption(decoded) { return reply(.failure(Self.corrupt)) }
        if refusedForSpace(decoded, requestBytes: request.count, reply) { return }
        let id = nextProposalID
        nextProposalID &+= 1
        do {
            try member.propose(ProposedRequest(kind: kind, id: id, request: request).encoded())
        } catch {
            proposalsFailed += 1
            switch error {
            case .noLeader: reply(.failure(GRPCStatus(.unavailable, EtcdMessage.noLeader)))
            case .stopped: reply(.failure(writesRefused ?? GRPCStatus(.unavailable, "swetcd: writes are refused")))
            case .pending: reply(.failure(GRPCStatus(.unavailable, EtcdMessage.requestTimedOut)))  // only for membership changes
            }
            return
        }
        pendingProposals[id] = (decoded, reply, monotonicNanoseconds())
    }

    /// etcd's request timeout: 5 s and two election timeouts.
    var requestTimeoutNanoseconds: UInt64 { UInt64(5_000 + 2 * config.electionTimeoutMs) * 1_000_000 }

    /// Proposals not applied within the request timeout (lost with a
    /// leader, or waiting for one too long) are answered as etcd answers
    /// them; one applied later changes the store but answers no one.
    func timeOutProposals() {
        let now = monotonicNanoseconds(), limit = requestTimeoutNanoseconds
        for (id, c) in pendingConfChanges where now - c.at > limit {
            pendingConfChanges[id] = nil
            c.reply(.failure(GRPCStatus(.unavailable, EtcdMessage.requestTimedOut)))
        }
        guard !pendingProposals.isEmpty else { return }
        let late = pendingProposals.filter { now - $0.value.at > limit }
        for (id, p) in late {
            pendingProposals[id] = nil
            proposalsFailed += 1
            p.reply(.failure(GRPCStatus(.unavailable, EtcdMessage.requestTimedOut)))
        }
    }

    /// Serves `read` once everything committed before it is applied.
    func linearizably(_ read: @escaping () -> Void) {
        member.linearizableRead(read)
    }

    /// Applies committed entries in log order (on the loop) and answers the
    /// proposals among them that this member made. Entries the backend
    /// holds already (handed over again after a restart) are skipped.
    func applyCommitted(_ entries: [Entry]) {
        var replies: [(reply: (Result<GRPCMessageBuffer, GRPCStatus>) -> Void, outcome: Result<GRPCMessageBuffer, GRPCStatus>)] = []
        // Watchers present now are the only ones these changes can be for.
        store.recordsChanges = !servedWatches.isEmpty || !keyWaits.isEmpty
        for entry in entries where entry.index > appliedIndex {
            store.setConsistentIndex(entry.index)
            if entry.kind == .confChange {
                applyMembershipEntry(entry)
                appliedIndex = entry.index
                continue
            }
            // A new leader's empty entry: nothing for the store.
            guard !entry.data.isEmpty else {
                appliedIndex = entry.index
                continue
            }
            // This member's own proposal is decoded already; another's (or
            // a replayed one) is decoded from the log's bytes.
            let waiting = ProposedRequest.id(ofEncoded: entry.data).flatMap { pendingProposals.removeValue(forKey: $0) }
            // A request that does not decode failed when it was proposed
            // too: it changes nothing.
            guard let decoded = waiting?.decoded
                    ?? ProposedRequest(decoding: entry.data).flatMap({ try? DecodedWrite($0.kind, $0.request) }) else {
                appliedIndex = entry.index
                continue
            }
            let started = monotonicNanoseconds()
            let outcome = apply(decoded)
            noteApplyDuration(since: started)
            appliedIndex = entry.index
            guard let reply = waiting?.reply else { continue }
            if case .compact(let c) = decoded, c.physical, case .success = outcome {
                afterCompaction { reply(outcome) }
            } else {
                replies.append((reply, outcome))
            }
        }
        dispatchAppliedChanges()
        deliverKeyChanges()
        for (reply, outcome) in replies { reply(outcome) }
    }

    /// etcd's slow-apply warning and count: an apply of one request over
    /// 100 ms (a slow disk, or a huge range delete).
    private func noteApplyDuration(since started: UInt64) {
        let took = monotonicNanoseconds() - started
        guard took > ServerMetrics.slowApplyNanoseconds else { return }
        metrics.slowApplies += 1
        logger.warning("apply request took too long",
                       metadata: ["took": EtcdServer.duration(nanoseconds: took), "expected-duration": "100ms"])
    }

    /// The WAL failed: nothing more is made durable, so nothing waiting
    /// will be applied.
    func memberStopped(_ why: String) {
        refuseWrites(because: "the WAL failed: \(why)")
        let waiting = pendingProposals.values
        pendingProposals = [:]
        for p in waiting { p.reply(.failure(writesRefused!)) }
        let changes = pendingConfChanges.values
        pendingConfChanges = [:]
        for c in changes { c.reply(.failure(writesRefused!)) }
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
                let r = try store.txn(t)
                return .success(try Wire.txnResponse(r, header: header(revision: r.revision)).serializedBytes())
            case .compact(let c):
                try store.compact(c.revision)
                logger.info("compact tree index", metadata: ["revision": "\(c.revision)"])
                compactionStartedAt = compactionStartedAt ?? monotonicNanoseconds()
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
            case .memberAttributes(let m):
                try applyMemberAttributes(m)
                return .success(GRPCMessageBuffer(copying: []))
            case .auth(let change):
                try applyAuthChange(change)
                // Every auth change's response is a header alone.
                var response = Etcdserverpb_AuthEnableResponse()
                response.header = header()
                return .success(try response.serializedBytes())
            case .alarm(let r):
                return .success(try applyAlarm(r).serializedBytes())
            case .leaseCheckpoint(let r):
                return .success(try applyLeaseCheckpoint(r).serializedBytes())
            }
        } catch let e as any EtcdStatusError {
            return .failure(GRPCStatus(e))
        } catch {
            return .failure(GRPCStatus(.internal, "apply: \(error)"))
        }
    }
}
