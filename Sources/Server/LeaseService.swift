import EtcdProto
import EtcdStatus
import Foundation
import Lease
import MVCC
import Transport

/// etcdserverpb.Lease: LeaseGrant, LeaseRevoke, LeaseKeepAlive,
/// LeaseTimeToLive, LeaseLeases. Grants and revocations (also those of
/// expired leases) are log entries like any write; keep-alives renew in
/// memory on the leader (followers pass them on); every
/// `--experimental-lease-checkpoint-interval` the leader logs each lease's
/// remaining TTL (etcd's lease checkpoints), which every member keeps in
/// its backend: a restart resumes each lease from it, and so does a new
/// leader.
extension EtcdServer {
    /// etcd revokes at most 1,000 expired leases a second; the rest wait
    /// for the next tick, in expiry order.
    static let leaseExpiryTick = 0.5
    static let leaseRevokesPerTick = 500

    /// Rebuilds the lessor from the backend (before the WAL's replay, which
    /// goes through the same apply as live writes) and hooks it to the store.
    func restoreLeases() throws {
        let now = monotonicNanoseconds()
        for stored in try store.storedLeases() {
            _ = try lessor.grant(id: stored.id, ttl: stored.ttl, now: now)
            if stored.remainingTTL > 0 {
                try lessor.setRemaining(stored.id, seconds: stored.remainingTTL, now: now)
                checkpointedRemaining[stored.id] = stored.remainingTTL
            }
        }
        for (key, id) in store.leasedKeysAtOpen { try? lessor.attach(key, to: id) }
        store.leasedKeysAtOpen = [:]
        store.leaseExists = { [unowned self] in lessor.lease($0) != nil }
        store.onLeaseAttach = { [unowned self] key, id in try? lessor.attach(key, to: id) }
    }

    func registerLease() {
        let service = "etcdserverpb.Lease"
        answeringLater(service, "LeaseGrant", access: .authenticated) { [unowned self] (request: Etcdserverpb_LeaseGrantRequest, call, key) in
            var grant = request
            guard grant.ttl <= Lessor.maxTTL else {
                finish(call, key, status: GRPCStatus(LeaseError.ttlTooLarge))
                return
            }
            // The member picks the ID before the entry is logged, so that
            // replaying the log grants the same one.
            if grant.id == 0 { grant.id = newLeaseID() }
            guard let entry: [UInt8] = try? grant.serializedBytes() else {
                finish(call, key, status: GRPCStatus(.internal, "grpc: error marshalling request"))
                return
            }
            propose(.leaseGrant, entry, .leaseGrant(grant)) { [unowned self] outcome in reply(call, key, outcome) }
        }
        proposing(service, "LeaseRevoke", .leaseRevoke)

        let keepAliveKey = metrics.key(type: "bidi_stream", service: service, method: "LeaseKeepAlive")
        register(service, "LeaseKeepAlive", .bidirectionalStreaming) { [unowned self] call, _ in
            call.onMessage = { [unowned self] bytes in
                guard let request = try? Etcdserverpb_LeaseKeepAliveRequest(serializedBytes: bytes) else {
                    finish(call, keepAliveKey, status: GRPCStatus(.internal, "grpc: error unmarshalling request"))
                    return
                }
                // Renewing keeps the lease's keys: the caller must be able to write them.
                guard passes(call, keepAliveKey, { try authorize(call, lease: request.id, write: true) }) else { return }
                let answer = { [unowned self] (ttl: Int64) in
                    var r = Etcdserverpb_LeaseKeepAliveResponse()
                    r.header = header()
                    r.id = request.id
                    r.ttl = ttl
                    if let message = try? r.serializedBytes() as GRPCMessageBuffer { call.send(message) }
                }
                // The leader keeps the time: a follower passes the renewal
                // on to it (as etcd's followers do) and answers with its TTL;
                // with no leader to reach, no answer (the client sends again).
                if let transport = member.transport, !member.isLeader {
                    guard member.leader != 0 else { return }
                    _ = try? renewLease(request.id)  // ready if this member leads next
                    transport.call(Self.renewPath, to: member.leader, request: bytes, timeout: 5) { result in
                        guard case .success(let reply) = result,
                              let r = try? Etcdserverpb_LeaseKeepAliveResponse(serializedBytes: reply) else { return }
                        answer(r.ttl)
                    }
                    return
                }
                // As etcd: an unknown (or expired) lease gets TTL 0, not an error.
                answer((try? renewLease(request.id)) ?? 0)
            }
            call.onRequestEnd = { [unowned self] in finish(call, keepAliveKey, status: .ok) }
        }

        // A follower's renewal, at the leader.
        member.transport?.services[Self.renewPath] = GRPCMethod(.unary) { [unowned self] call, bytes in
            guard member.isLeader, let request = try? Etcdserverpb_LeaseKeepAliveRequest(serializedBytes: bytes) else {
                call.finish(GRPCStatus(.unavailable, EtcdMessage.noLeader))
                return
            }
            var r = Etcdserverpb_LeaseKeepAliveResponse()
            r.id = request.id
            r.ttl = (try? renewLease(request.id)) ?? 0
            if let message = try? r.serializedBytes() as GRPCMessageBuffer { call.respond(message) }
        }
        // A new leader gives every lease its whole TTL again, or what its
        // last checkpoint left it (etcd's promotion), since the keep-alives
        // went to the old one.
        member.onLeadership = { [unowned self] leading in
            if leading { promoteLeases() }
        }
        // A member that leads already (alone, after replaying its log).
        if member.isLeader { promoteLeases() }

        let ttlKey = metrics.key(type: "unary", service: service, method: "LeaseTimeToLive")
        unary(service, "LeaseTimeToLive", access: .authenticated) { [unowned self] (r: Etcdserverpb_LeaseTimeToLiveRequest, call) -> Reply<Etcdserverpb_LeaseTimeToLiveResponse> in
            if r.keys { try authorize(call, lease: r.id, write: false) }
            // The leader keeps the time: a follower asks it (as etcd's do).
            if let transport = member.transport, !member.isLeader {
                guard member.leader != 0 else { throw GRPCStatus(.unavailable, EtcdMessage.noLeader) }
                let bytes: [UInt8] = try r.serializedBytes()
                transport.call(Self.timeToLivePath, to: member.leader, request: bytes, timeout: 5) { [unowned self] result in
                    switch result {
                    case .success(let reply):
                        guard var out = try? Etcdserverpb_LeaseTimeToLiveResponse(serializedBytes: reply) else {
                            return finish(call, ttlKey, status: GRPCStatus(.internal, "an undecodable answer from the leader"))
                        }
                        out.header = header()
                        respond(call, ttlKey, out)
                    case .failure(let status): finish(call, ttlKey, status: status)
                    }
                }
                return .later
            }
            // Like a linearizable read: it sees every grant and revocation
            // committed before it.
            if member.canReadNow { return .now(try timeToLive(r)) }
            linearizably { [unowned self] in
                do { respond(call, ttlKey, try timeToLive(r)) } catch {
                    finish(call, ttlKey, status: GRPCStatus(.internal, "\(error)"))
                }
            }
            return .later
        }

        // A follower's LeaseTimeToLive, at the leader.
        member.transport?.services[Self.timeToLivePath] = GRPCMethod(.unary) { [unowned self] call, bytes in
            guard member.isLeader, let request = try? Etcdserverpb_LeaseTimeToLiveRequest(serializedBytes: bytes) else {
                return call.finish(GRPCStatus(.unavailable, EtcdMessage.noLeader))
            }
            linearizably { [unowned self] in
                guard let out = try? timeToLive(request), let message = try? out.serializedBytes() as GRPCMessageBuffer else {
                    return call.finish(GRPCStatus(.internal, "lease time to live"))
                }
                call.respond(message)
            }
        }

        unary(service, "LeaseLeases", access: .authenticated) { [unowned self] (_: Etcdserverpb_LeaseLeasesRequest, call) -> Reply<Etcdserverpb_LeaseLeasesResponse> in
            // Listing leases shows which exist: the caller must be able to read their keys.
            if let user = try caller(of: call) {
                for id in lessor.ids { try authorizeLeaseKeys(user, id, write: false) }
            }
            var r = Etcdserverpb_LeaseLeasesResponse()
            r.header = header()
            r.leases = lessor.ids.map { id in
                var status = Etcdserverpb_LeaseStatus()
                status.id = id
                return status
            }
            return .now(r)
        }

        leaseExpiryTimer = loop.schedule(every: Self.leaseExpiryTick) { [unowned self] in expireLeases() }
        if config.leaseCheckpointInterval > 0 {
            leaseCheckpointTimer = loop.schedule(every: config.leaseCheckpointInterval) { [unowned self] in
                proposeLeaseCheckpoints()
            }
        }
    }

    private func promoteLeases() {
        let now = monotonicNanoseconds()
        for id in lessor.ids {
            _ = try? lessor.renew(id, now: now)
            if let left = checkpointedRemaining[id] { try? lessor.setRemaining(id, seconds: left, now: now) }
        }
    }

    // MARK: Applying grants and revocations (log entries)

    func applyLeaseGrant(_ g: Etcdserverpb_LeaseGrantRequest) throws -> Etcdserverpb_LeaseGrantResponse {
        let lease = try lessor.grant(id: g.id, ttl: g.ttl, now: monotonicNanoseconds())
        try store.save(StoredLease(id: lease.id, ttl: lease.ttl))
        var r = Etcdserverpb_LeaseGrantResponse()
        r.header = header()
        r.id = lease.id
        r.ttl = lease.ttl
        return r
    }

    /// Ends the lease and deletes its keys in one revision: watchers see
    /// one DELETE per key, all at that revision.
    func applyLeaseRevoke(_ request: Etcdserverpb_LeaseRevokeRequest) throws -> Etcdserverpb_LeaseRevokeResponse {
        let keys = try keysHolding(request.id, of: lessor.revoke(request.id))
        // The lease's row goes first: a backend commit inside deleteKeys (a
        // full batch) then holds the whole revocation with its log index.
        try store.removeLease(request.id)
        _ = store.deleteKeys(keys)
        checkpointedRemaining[request.id] = nil
        var r = Etcdserverpb_LeaseRevokeResponse()
        r.header = header()
        return r
    }

    /// The keys among `attached` whose current version holds lease `id`:
    /// the lessor forgets a key only when it moves to another lease, so a
    /// key since deleted or put without a lease is not this lease's.
    func keysHolding<S: Sequence>(_ id: Int64, of attached: S) throws -> [[UInt8]] where S.Element == [UInt8] {
        try attached.filter { try store.lease(of: $0) == id }
    }

    // MARK: Keep-alive, time to live, expiry, checkpoints

    /// Restarts the lease's TTL (in memory). A leader renewing a lease
    /// that has a checkpointed remaining time logs a checkpoint of 0,
    /// which clears it on every member (etcd's rule: at most two
    /// checkpoint entries per lease per interval). An expired lease is not
    /// renewed.
    func renewLease(_ id: Int64) throws(LeaseError) -> Int64 {
        let ttl = try lessor.renew(id, now: monotonicNanoseconds())
        if member.isLeader, checkpointedRemaining[id] != nil, !clearingCheckpoints.contains(id) {
            clearingCheckpoints.insert(id)
            proposeLeaseCheckpoint([(id, 0)]) { [unowned self] in clearingCheckpoints.remove(id) }
        }
        return ttl
    }

    /// Applies a logged checkpoint on every member: the remaining time is
    /// kept (backend and memory) for a restart or the next leader; 0
    /// clears it. The leader's own expiry times do not change.
    func applyLeaseCheckpoint(_ r: Etcdserverpb_LeaseCheckpointRequest) throws -> Etcdserverpb_LeaseCheckpointResponse {
        for cp in r.checkpoints {
            guard let lease = lessor.lease(cp.id) else { continue }
            if cp.remainingTtl > 0 {
                try store.save(StoredLease(id: cp.id, ttl: lease.ttl, remainingTTL: cp.remainingTtl))
                checkpointedRemaining[cp.id] = cp.remainingTtl
            } else if checkpointedRemaining.removeValue(forKey: cp.id) != nil {
                try store.save(StoredLease(id: cp.id, ttl: lease.ttl))
            }
        }
        var out = Etcdserverpb_LeaseCheckpointResponse()
        out.header = header()
        return out
    }

    private func proposeLeaseCheckpoint(_ checkpoints: [(id: Int64, remaining: Int64)], done: @escaping () -> Void = {}) {
        var r = Etcdserverpb_LeaseCheckpointRequest()
        r.checkpoints = checkpoints.map { c in
            var cp = Etcdserverpb_LeaseCheckpoint()
            cp.id = c.id
            cp.remainingTtl = c.remaining
            return cp
        }
        guard let bytes: [UInt8] = try? r.serializedBytes() else { return done() }
        propose(.leaseCheckpoint, bytes, .leaseCheckpoint(r)) { _ in done() }
    }

    /// The leader logs the remaining TTL of every lease that has used part
    /// of its TTL.
    private func proposeLeaseCheckpoints() {
        guard member.isLeader, writesRefused == nil else { return }
        let checkpoints = partlyUsedLeases()
        // etcd's batches: at most 1,000 leases an entry.
        for start in stride(from: 0, to: checkpoints.count, by: 1_000) {
            proposeLeaseCheckpoint(Array(checkpoints[start..<min(start + 1_000, checkpoints.count)]))
        }
    }

    private func timeToLive(_ r: Etcdserverpb_LeaseTimeToLiveRequest) throws -> Etcdserverpb_LeaseTimeToLiveResponse {
        var out = Etcdserverpb_LeaseTimeToLiveResponse()
        out.header = header()
        out.id = r.id
        guard let lease = lessor.lease(r.id), let remaining = lessor.remaining(r.id, now: monotonicNanoseconds()) else {
            out.ttl = -1  // etcd's answer for a lease it does not have
            return out
        }
        out.ttl = remaining
        out.grantedTtl = lease.ttl
        if r.keys {
            out.keys = try keysHolding(r.id, of: lease.keys).sorted { $0.lexicographicallyPrecedes($1) }.map { Data($0) }
        }
        return out
    }

    static let renewPath = "/swetcd.Lease/Renew"
    static let timeToLivePath = "/swetcd.Lease/TimeToLive"

    /// Proposes the revocation of leases past their expiry, a bounded
    /// number per tick.
    private func expireLeases() {
        // The leader alone expires leases (through the log, as any write).
        guard writesRefused == nil, member.isLeader else { return }
        for id in lessor.takeExpired(now: monotonicNanoseconds(), limit: Self.leaseRevokesPerTick) {
            var r = Etcdserverpb_LeaseRevokeRequest()
            r.id = id
            guard let bytes: [UInt8] = try? r.serializedBytes() else { continue }
            propose(.leaseRevoke, bytes, .leaseRevoke(r)) { [unowned self] outcome in
                if case .failure(let status) = outcome, status.code != .notFound {
                    logger.warning("revoking an expired lease failed", metadata: ["lease": "\(hex(UInt64(bitPattern: id)))",
                                                                                   "error": "\(status.message)"])
                }
            }
        }
    }

    /// Writes each lease's remaining TTL that is below its whole TTL to this
    /// member's backend, so a restart resumes it (at a clean stop).
    func checkpointLeases() {
        for (id, left) in partlyUsedLeases() {
            guard let lease = lessor.lease(id) else { continue }
            do {
                try store.save(StoredLease(id: id, ttl: lease.ttl, remainingTTL: left))
                checkpointedRemaining[id] = left
            } catch {
                logger.warning("lease checkpoint failed", metadata: ["error": "\(error)"])
                return
            }
        }
    }

    /// Every lease that has used part of its TTL, with the seconds it has
    /// left (at least 1).
    private func partlyUsedLeases() -> [(id: Int64, remaining: Int64)] {
        let now = monotonicNanoseconds()
        return lessor.ids.compactMap { id in
            guard let lease = lessor.lease(id), let left = lessor.remaining(id, now: now), left < lease.ttl else { return nil }
            return (id, max(left, 1))
        }
    }

    /// A random positive ID no lease has.
    func newLeaseID() -> Int64 {
        while true {
            let id = Int64.random(in: 1...Int64.max)
            if lessor.lease(id) == nil { return id }
        }
    }
}
