import EtcdProto
import EtcdStatus
import Logging
import Member
import MVCC
import Transport

/// etcd's corruption checks: members compare HashKV at one revision.
/// `--experimental-initial-corrupt-check`: before serving, a restarted
/// member compares its own with its peers' and refuses to start on a
/// mismatch. `--experimental-corrupt-check-time`: the leader compares every
/// member's with its own at that interval and raises the CORRUPT alarm for
/// one that differs; while it is raised, writes are refused with etcd's
/// `etcdserver: corrupt cluster`.
extension EtcdServer {
    /// The peer service that answers HashKV at a revision (etcd's
    /// /members/hashkv on the peer port).
    static let hashKVPath = "/swetcd.Maintenance/HashKV"

    static let corrupt = GRPCStatus(.dataLoss, "etcdserver: corrupt cluster")

    func hashKVService() -> GRPCMethod {
        GRPCMethod(.unary) { [unowned self] call, bytes in
            guard let request = try? Etcdserverpb_HashKVRequest(serializedBytes: bytes) else {
                return call.finish(GRPCStatus(.internal, "grpc: error unmarshalling request"))
            }
            do {
                call.respond(try hashKVResponse(revision: request.revision).serializedBytes() as [UInt8])
            } catch let e as any EtcdStatusError {
                call.finish(GRPCStatus(e))
            } catch {
                call.finish(GRPCStatus(.internal, "\(error)"))
            }
        }
    }

    /// HashKV at `revision` (0: the current one), as the RPC answers it.
    func hashKVResponse(revision: Int64) throws -> Etcdserverpb_HashKVResponse {
        let h = try store.hashKV(revision: revision)
        var r = Etcdserverpb_HashKVResponse()
        r.header = header()
        r.hash = h.hash
        r.compactRevision = h.compactRevision
        r.hashRevision = h.hashRevision
        return r
    }

    /// Each of `peers`' HashKV at `revision` (nil for one that did not
    /// answer or could not: behind, or compacted past it), then `done`.
    private static func peerHashKVs(_ peers: [UInt64], transport: PeerTransport, at revision: Int64, timeout: Double,
                                    _ done: @escaping ([(id: UInt64, answer: Etcdserverpb_HashKVResponse?)]) -> Void) {
        var request = Etcdserverpb_HashKVRequest()
        request.revision = revision
        guard !peers.isEmpty, let bytes: [UInt8] = try? request.serializedBytes() else { return done([]) }
        var answers: [(id: UInt64, answer: Etcdserverpb_HashKVResponse?)] = []
        for id in peers {
            transport.call(Self.hashKVPath, to: id, request: bytes, timeout: timeout) { result in
                var answer: Etcdserverpb_HashKVResponse?
                if case .success(let b) = result { answer = try? Etcdserverpb_HashKVResponse(serializedBytes: b) }
                answers.append((id, answer))
                if answers.count == peers.count { done(answers) }
            }
        }
    }

    /// The peers whose HashKV at this member's revision differs from its
    /// own with the same compacted revision (those behind or compacted
    /// further are skipped, as etcd skips them).
    private static func mismatches(_ answers: [(id: UInt64, answer: Etcdserverpb_HashKVResponse?)],
                                   hash: UInt32, compactRevision: Int64, logger: Logger) -> [UInt64] {
        answers.compactMap { peer in
            guard let a = peer.answer, a.hash != hash else { return nil }
            guard a.compactRevision == compactRevision else {
                logger.warning("found different compact revision values from remote peer", metadata: [
                    "remote-peer-id": "\(hex(peer.id))", "local-member-compact-revision": "\(compactRevision)",
                    "remote-peer-compact-revision": "\(a.compactRevision)"])
                return nil
            }
            logger.warning("found different hash values from remote peer", metadata: [
                "remote-peer-id": "\(hex(peer.id))", "local-member-hash": "\(hash)", "remote-peer-hash": "\(a.hash)",
                "revision": "\(a.hashRevision)", "compact-revision": "\(compactRevision)"])
            return peer.id
        }
    }

    /// etcd's CheckInitialHashKV, before Raft starts and before anyone is
    /// served (as etcd runs it): the loop runs, for the peers' answers
    /// only, for at most `seconds`.
    static func checkInitialHashKV(store: Store, transport: PeerTransport, peers: [UInt64], memberID: UInt64,
                                   loop: EventLoop, logger: Logger, seconds: Double = 5) throws {
        logger.info("starting initial corruption check", metadata: ["local-member-id": "\(hex(memberID))"])
        let own = try store.hashKV(revision: 0)
        var answers: [(id: UInt64, answer: Etcdserverpb_HashKVResponse?)]?
        peerHashKVs(peers, transport: transport, at: own.hashRevision, timeout: seconds) { answers = $0 }
        _ = loop.run(until: { answers != nil }, seconds: seconds)
        if !mismatches(answers ?? [], hash: own.hash, compactRevision: own.compactRevision, logger: logger).isEmpty {
            throw ServerError.corrupt("\(hex(memberID)) found data inconsistency with peers")
        }
        logger.info("initial corruption checking passed; no corruption", metadata: ["local-member-id": "\(hex(memberID))"])
    }

    /// The leader's periodic check: a member whose HashKV differs gets the
    /// CORRUPT alarm (through the log, as any alarm).
    func checkHashKVs() {
        guard member.isLeader, !corruptionCheckRunning, let own = try? store.hashKV(revision: 0) else { return }
        guard let transport = member.transport else { return }
        corruptionCheckRunning = true
        let peers = membership.sorted.map(\.id).filter { $0 != memberID }
        Self.peerHashKVs(peers, transport: transport, at: own.hashRevision, timeout: 5) { [unowned self] answers in
            corruptionCheckRunning = false
            for id in Self.mismatches(answers, hash: own.hash, compactRevision: own.compactRevision, logger: logger) {
                var alarm = Etcdserverpb_AlarmRequest()
                alarm.action = .activate
                alarm.memberID = id
                alarm.alarm = .corrupt
                guard let bytes = try? alarm.serializedBytes() as [UInt8] else { continue }
                propose(.alarm, bytes, .alarm(alarm)) { _ in }
            }
        }
    }

    var corruptRaised: Bool { alarms.contains { $0.type == Etcdserverpb_AlarmType.corrupt.rawValue } }

    /// Writes refused while CORRUPT is raised (etcd's corrupt applier).
    func refusedForCorruption(_ write: DecodedWrite) -> Bool {
        guard corruptRaised else { return false }
        switch write {
        case .put, .deleteRange, .txn, .compact, .leaseGrant, .leaseRevoke: return true
        case .v2, .memberAttributes, .auth, .alarm, .leaseCheckpoint: return false
        }
    }
}
