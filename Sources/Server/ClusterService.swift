import EtcdProto
import Logging
import EtcdStatus
import Member
import Raft
import MVCC
import SwiftProtobuf
import Transport

/// etcdserverpb.Cluster: the member list and runtime reconfiguration.
/// A change is a membership entry in the log (etcd's ConfChange), checked
/// against the membership when it is applied, on every member alike; the
/// member that proposed it answers with the members then.
extension EtcdServer {
    /// Where a follower passes a promotion on to the leader (only the
    /// leader knows whether the learner has caught up).
    static let promotePath = "/swetcd.Cluster/Promote"
    /// What a learner serves (with a serializable range only).
    static let statusPath = "/etcdserverpb.Maintenance/Status"
    static let rangePath = "/etcdserverpb.KV/Range"
    /// etcd's HealthInterval: how long a peer must have been connected for
    /// a change to count it.
    static let healthIntervalNanoseconds: UInt64 = 5_000_000_000
    /// etcd's readyPercent: a learner is in sync once its log matches 90%
    /// of the leader's.
    static let learnerReadyFraction = 0.9

    func registerCluster() {
        let cluster = "etcdserverpb.Cluster"
        unary(cluster, "MemberList", access: .authenticated) { [unowned self] (_: Etcdserverpb_MemberListRequest, _) -> Reply<Etcdserverpb_MemberListResponse> in
            var response = Etcdserverpb_MemberListResponse()
            response.header = clusterHeader()
            response.members = listedMembers()
            return .now(response)
        }
        answeringLater(cluster, "MemberAdd", access: .admin) { [unowned self] (r: Etcdserverpb_MemberAddRequest, call, key) in
            guard let urls = Self.validPeerURLs(r.peerUrls) else {
                return finish(call, key, status: GRPCStatus(.invalidArgument, EtcdMessage.memberBadURLs))
            }
            // etcd's new member ID: its peer URLs and the time.
            let id = ClusterIdentity.memberID(peerURLs: urls, token: String(Self.wallClockMilliseconds() / 1000))
            let added = Membership.Member(id: id, peerURLs: urls, isLearner: r.isLearner)
            if !r.isLearner, let refusal = refusalToAddVoter() { return finish(call, key, status: refusal) }
            configure(.add(added)) { [unowned self] result in
                answer(call, key, result) { members in
                    var response = Etcdserverpb_MemberAddResponse()
                    response.header = clusterHeader()
                    response.member = Membership.Member(id: id, peerURLs: urls, isLearner: r.isLearner).proto
                    response.members = members
                    return response
                }
            }
        }
        answeringLater(cluster, "MemberRemove", access: .admin) { [unowned self] (r: Etcdserverpb_MemberRemoveRequest, call, key) in
            if let refusal = refusalToRemove(r.id) { return finish(call, key, status: refusal) }
            configure(.remove(r.id)) { [unowned self] result in
                answer(call, key, result) { members in
                    var response = Etcdserverpb_MemberRemoveResponse()
                    response.header = clusterHeader()
                    response.members = members
                    return response
                }
            }
        }
        answeringLater(cluster, "MemberUpdate", access: .admin) { [unowned self] (r: Etcdserverpb_MemberUpdateRequest, call, key) in
            guard let urls = Self.validPeerURLs(r.peerUrls) else {
                return finish(call, key, status: GRPCStatus(.invalidArgument, EtcdMessage.memberBadURLs))
            }
            configure(.update(r.id, peerURLs: urls)) { [unowned self] result in
                answer(call, key, result) { members in
                    var response = Etcdserverpb_MemberUpdateResponse()
                    response.header = clusterHeader()
                    response.members = members
                    return response
                }
            }
        }
        answeringLater(cluster, "MemberPromote", access: .admin) { [unowned self] (r: Etcdserverpb_MemberPromoteRequest, call, key) in
            promote(r.id) { [unowned self] result in
                answer(call, key, result) { members in
                    var response = Etcdserverpb_MemberPromoteResponse()
                    response.header = clusterHeader()
                    response.members = members
                    return response
                }
            }
        }
    }

    /// etcd's cluster answers: no revision.
    func clusterHeader() -> Etcdserverpb_ResponseHeader {
        var h = header()
        h.revision = 0
        return h
    }

    private func answer<Response: SwiftProtobuf.Message>(_ call: GRPCCall, _ key: ServerMetrics.CallKey,
                                                         _ result: Result<[Etcdserverpb_Member], GRPCStatus>,
                                                         _ response: ([Etcdserverpb_Member]) -> Response) {
        switch result {
        case .success(let members): respond(call, key, response(members))
        case .failure(let status): finish(call, key, status: status)
        }
    }

    /// The members as MemberList shows them: this member with its own
    /// name and client URLs even before it has published them (a member
    /// alone never needs to).
    func listedMembers() -> [Etcdserverpb_Member] {
        if membership.isEmpty { return [selfMember] }
        return membership.sorted.map { m in
            var p = m.proto
            if m.id == memberID {
                if p.name.isEmpty { p.name = config.name }
                if p.clientUrls.isEmpty { p.clientUrls = clientURLs }
            }
            return p
        }
    }

    var selfMember: Etcdserverpb_Member {
        var m = Etcdserverpb_Member()
        m.id = memberID
        m.name = config.name
        m.peerUrls = config.initialAdvertisePeerURLs
        m.clientUrls = clientURLs
        m.isLearner = isLearner
        return m
    }

    /// The client URLs this member serves, as clients are told them.
    var clientURLs: [String] { (config.advertiseClientURLs ?? listenedClientURLs ?? config.listenClientURLs).map(\.description) }

    /// etcd's types.NewURLs: http(s)://host:port each, no path; sorted.
    static func validPeerURLs(_ urls: [String]) -> [String]? {
        guard !urls.isEmpty else { return nil }
        for u in urls {
            guard let parsed = ServerConfig.ClientURL(u), u.hasSuffix(":\(parsed.port)") else { return nil }
        }
        return urls.sorted()
    }

    // MARK: Proposing a change

    /// Proposes `change` and calls `reply` once it is applied (the members
    /// then) or refused.
    func configure(_ change: Membership.Change, reply: @escaping (Result<[Etcdserverpb_Member], GRPCStatus>) -> Void) {
        if let writesRefused { return reply(.failure(writesRefused)) }
        let requestID = nextProposalID
        nextProposalID &+= 1
        do {
            try member.proposeConfChange(try MembershipEntry(requestID: requestID, change: change).encoded())
        } catch let error as Member.ProposalError {
            switch error {
            case .noLeader: return reply(.failure(GRPCStatus(.unavailable, EtcdMessage.noLeader)))
            // etcd's raft drops a second change while one is pending, and
            // the proposer times out: the same answer, at once.
            case .pending: return reply(.failure(GRPCStatus(.unavailable, EtcdMessage.requestTimedOut)))
            case .stopped: return reply(.failure(writesRefused ?? GRPCStatus(.unavailable, "swetcd: writes are refused")))
            }
        } catch {
            return reply(.failure(GRPCStatus(.internal, "\(error)")))
        }
        pendingConfChanges[requestID] = (reply, monotonicNanoseconds())
    }

    // MARK: etcd's strict reconfiguration checks

    private func isStarted(_ m: Membership.Member) -> Bool { !m.name.isEmpty || m.id == memberID }

    /// Whether `id` has been connected to this member since before the
    /// health interval (this member always is).
    private func connectedLongEnough(_ id: UInt64, now: UInt64) -> Bool {
        if id == memberID { return true }
        guard let since = member.transport?.activeSince(id) else { return false }
        return now >= since + Self.healthIntervalNanoseconds
    }

    /// etcd's mayAddMember for a voter.
    private func refusalToAddVoter() -> GRPCStatus? {
        guard config.strictReconfigCheck else { return nil }
        let voters = membership.sorted.filter { !$0.isLearner }
        let members = voters.count + 1, started = voters.filter(isStarted).count
        // Adding a second member to one (restoring a cluster) is allowed.
        if !(started == 1 && members == 2) && started < members / 2 + 1 {
            return GRPCStatus(.failedPrecondition, EtcdMessage.notEnoughStartedMembers)
        }
        let now = monotonicNanoseconds()
        if !voters.allSatisfy({ connectedLongEnough($0.id, now: now) }) {
            logger.warning("rejecting member add request; local member has not been connected to all peers, reconfigure breaks active quorum")
            return GRPCStatus(.unavailable, EtcdMessage.unhealthy)
        }
        return nil
    }

    /// etcd's mayRemoveMember.
    private func refusalToRemove(_ id: UInt64) -> GRPCStatus? {
        guard config.strictReconfigCheck, let target = membership[id], !target.isLearner else { return nil }
        let others = membership.sorted.filter { !$0.isLearner && $0.id != id }
        if others.filter(isStarted).count < others.count / 2 + 1 {
            return GRPCStatus(.failedPrecondition, EtcdMessage.notEnoughStartedMembers)
        }
        // A member that is down is no part of the active quorum.
        if id != memberID && member.transport?.activeSince(id) == nil { return nil }
        let voters = membership.sorted.filter { !$0.isLearner }
        let now = monotonicNanoseconds()
        let active = voters.filter { connectedLongEnough($0.id, now: now) }.count
        if active - 1 < 1 + (voters.count - 1) / 2 {
            logger.warning("rejecting member remove request; local member has not been connected to all peers, reconfigure breaks active quorum")
            return GRPCStatus(.unavailable, EtcdMessage.unhealthy)
        }
        return nil
    }

    /// etcd's isLearnerReady and IsReadyToPromoteMember (the leader only).
    private func refusalToPromote(_ id: UInt64) -> GRPCStatus? {
        guard let learnerMatch = member.matchIndex(of: id), let leaderMatch = member.matchIndex(of: memberID) else {
            return GRPCStatus(.notFound, EtcdMessage.memberNotFound)
        }
        if Double(learnerMatch) < Double(leaderMatch) * Self.learnerReadyFraction {
            return GRPCStatus(.failedPrecondition, EtcdMessage.learnerNotReady)
        }
        guard config.strictReconfigCheck else { return nil }
        let voters = membership.sorted.filter { !$0.isLearner }
        let members = voters.count + 1, started = voters.filter(isStarted).count + 1
        if started < members / 2 + 1 { return GRPCStatus(.failedPrecondition, EtcdMessage.notEnoughStartedMembers) }
        return nil
    }

    /// Promotes a learner: on the leader, once it has caught up; on
    /// another member, by asking the leader.
    func promote(_ id: UInt64, reply: @escaping (Result<[Etcdserverpb_Member], GRPCStatus>) -> Void) {
        if member.isLeader {
            if let refusal = refusalToPromote(id) { return reply(.failure(refusal)) }
            return configure(.promote(id), reply: reply)
        }
        guard member.leader != noNode, let transport = member.transport else {
            return reply(.failure(GRPCStatus(.unavailable, EtcdMessage.noLeader)))
        }
        var request = Etcdserverpb_MemberPromoteRequest()
        request.id = id
        guard let bytes: [UInt8] = try? request.serializedBytes() else { return reply(.failure(GRPCStatus(.internal, "cannot encode"))) }
        transport.call(Self.promotePath, to: member.leader, request: bytes, timeout: Double(requestTimeoutNanoseconds) / 1e9) { result in
            switch result {
            case .success(let answer):
                guard let list = try? Etcdserverpb_MemberListResponse(serializedBytes: answer) else {
                    return reply(.failure(GRPCStatus(.internal, "an undecodable answer from the leader")))
                }
                reply(.success(list.members))
            case .failure(let status):
                reply(.failure(status.code == .deadlineExceeded ? GRPCStatus(.unavailable, EtcdMessage.requestTimedOut) : status))
            }
        }
    }

    /// The leader's side of a promotion passed on by another member.
    func promoteService() -> GRPCMethod {
        GRPCMethod(.unary) { [unowned self] call, bytes in
            guard let request = try? Etcdserverpb_MemberPromoteRequest(serializedBytes: bytes) else {
                return call.finish(GRPCStatus(.internal, "grpc: error unmarshalling request"))
            }
            guard member.isLeader else { return call.finish(GRPCStatus(.failedPrecondition, EtcdMessage.notLeader)) }
            promote(request.id) { result in
                switch result {
                case .success(let members):
                    var list = Etcdserverpb_MemberListResponse()
                    list.members = members
                    guard let answer: [UInt8] = try? list.serializedBytes() else { return call.finish(GRPCStatus(.internal, "cannot encode")) }
                    call.respond(answer)
                case .failure(let status):
                    call.finish(status)
                }
            }
        }
    }

    // MARK: Applying

    /// Applies a membership entry (in log order, on every member): checks
    /// it against the membership as etcd does, and if it holds, changes
    /// the membership, Raft's, and whom the transport talks to.
    /// etcd's words for an applied change, which operators grep for.
    private func logMembershipChange(_ change: Membership.Change) {
        var fields: Logger.Metadata = ["cluster-id": "\(hex(clusterID))", "local-member-id": "\(hex(memberID))"]
        switch change {
        case .add(let m):
            fields["added-peer-id"] = "\(hex(m.id))"
            fields["added-peer-peer-urls"] = .array(m.peerURLs.map { "\($0)" })
            fields["added-peer-is-learner"] = "\(m.isLearner)"
            logger.info("added member", metadata: fields)
        case .promote(let id):
            fields["promoted-member-id"] = "\(hex(id))"
            logger.info("promote member", metadata: fields)
        case .remove(let id):
            fields["removed-remote-peer-id"] = "\(hex(id))"
            logger.info("removed member", metadata: fields)
        case .update(let id, let urls):
            fields["updated-remote-peer-id"] = "\(hex(id))"
            fields["updated-remote-peer-urls"] = .array(urls.map { "\($0)" })
            logger.info("updated member", metadata: fields)
        }
    }

    func applyMembershipEntry(_ entry: Entry) {
        guard var applied = MembershipEntry(encoded: entry.data) else {
            logger.warning("skipped an undecodable membership entry", metadata: ["index": "\(entry.index)"])
            return
        }
        // A bootstrap entry of a swetcd before entries carried their
        // member: the flags name it.
        if case .add(var m) = applied.change, m.peerURLs.isEmpty, let known = bootstrapMembers.first(where: { $0.id == m.id }) {
            m.name = known.name
            m.peerURLs = known.peerURLs
            applied.change = .add(m)
        }
        let waiting = applied.requestID == 0 ? nil : pendingConfChanges.removeValue(forKey: applied.requestID)
        if let refusal = membership.validate(applied.change) {
            if applied.requestID != 0 || refusal != .idExists {
                logger.warning("rejected a membership change", metadata: ["index": "\(entry.index)", "change": "\(applied.change)",
                                                                          "error": "\(refusal.status.message)"])
            }
            waiting?.reply(.failure(refusal.status))
            return
        }
        membership.apply(applied.change)
        do {
            try backend.setMeta(.membership, try membership.encoded())
        } catch {
            refuseWrites(because: "cannot keep the membership: \(error)")
        }
        if let change = applied.change.raft { member.applyConfChange(change) }
        isLearner = membership[memberID]?.isLearner ?? false
        let transport = member.transport
        switch applied.change {
        case .add(let m):
            if let url = m.peerURLs.first.flatMap(ServerConfig.ClientURL.init) { transport?.addPeer(m.id, host: url.host, port: url.port) }
        case .update(let id, let urls):
            if let url = urls.first.flatMap(ServerConfig.ClientURL.init) { transport?.updatePeer(id, host: url.host, port: url.port) }
        case .remove(let id):
            transport?.removePeer(id)
        case .promote:
            break
        }
        logMembershipChange(applied.change)
        waiting?.reply(.success(listedMembers()))
        if case .remove(let id) = applied.change, id == memberID {
            // Answer first (the change may have been asked of this member).
            removalTimer = loop.schedule(every: 1, repeats: false) { [unowned self] in removed() }
        }
    }

    /// Raft's membership and the transport's peers as the backend's
    /// membership has them (after a leader's snapshot replaced it).
    func adoptMembership() {
        guard !membership.isEmpty else { return }
        member.setMembership(voters: membership.voters, learners: membership.learners)
        guard let transport = member.transport else { return }
        for id in transport.peerIDs where membership[id] == nil { transport.removePeer(id) }
        for m in membership.sorted where m.id != memberID {
            if let url = m.peerURLs.first.flatMap(ServerConfig.ClientURL.init) { transport.addPeer(m.id, host: url.host, port: url.port) }
        }
    }

    /// This member is no longer one: it says so, as etcd does, and stops.
    func removed() {
        guard !stopping else { return }
        stopping = true
        logger.warning("server error", metadata: ["error": "\(PeerTransport.memberRemoved)"])
        logger.warning("data-dir used by this member must be removed")
        onRemoved?()
    }

    /// The membership the backend holds; for a data dir from before it was
    /// kept there, the flags' members with what each published.
    func loadMembership() throws {
        membership = try Self.storedMembership(backend, appliedIndex: appliedIndex, bootstrapMembers: bootstrapMembers)
        isLearner = membership[memberID]?.isLearner ?? false
    }

    static func storedMembership(_ backend: LMDBBackend, appliedIndex: UInt64,
                                 bootstrapMembers: [(id: UInt64, name: String, peerURLs: [String])]) throws -> Membership {
        if let bytes = try backend.meta(.membership) { return try Membership(encoded: bytes) }
        var membership = Membership()
        guard appliedIndex > 0 else { return membership }
        for m in bootstrapMembers { membership.apply(.add(Membership.Member(id: m.id, name: m.name, peerURLs: m.peerURLs))) }
        if let bytes = try backend.meta(.memberAttributes) {
            for m in try Etcdserverpb_MemberListResponse(serializedBytes: bytes).members {
                membership.publish(m.id, name: m.name, clientURLs: m.clientUrls)
            }
        }
        try backend.setMeta(.membership, try membership.encoded())
        return membership
    }

    // MARK: Publishing attributes

    /// Publishes this member's name and client URLs through the log (etcd
    /// does at start), so every member's MemberList names them; again
    /// until it is applied, whenever a leader is known. A member alone
    /// need not.
    func publishAttributesIfNeeded() {
        guard membership.members.count > 1, !attributesPublished, !attributesPublishing, member.leader != 0,
              listenedClientURLs != nil, let known = membership[memberID] else { return }
        var m = Etcdserverpb_Member()
        m.id = memberID
        m.name = config.name
        m.clientUrls = clientURLs
        if known.name == m.name && known.clientURLs == m.clientUrls {
            attributesPublished = true
            startServingClients()
            return
        }
        guard let bytes: [UInt8] = try? m.serializedBytes() else { return }
        attributesPublishing = true
        propose(.memberAttributes, bytes, .memberAttributes(m)) { [unowned self] outcome in
            attributesPublishing = false
            if case .success = outcome {
                attributesPublished = true
                startServingClients()
            }
        }
    }

    /// A member that joined has applied its own attributes: it serves
    /// clients, the calls that waited first.
    func startServingClients() {
        guard !servingClients else { return }
        servingClients = true
        logger.info("published local member to cluster through raft; serving client requests", metadata: ["local-member-id": "\(hex(memberID))"])
        let held = heldUntilServing
        heldUntilServing = []
        for call in held { call() }
    }

    func applyMemberAttributes(_ m: Etcdserverpb_Member) throws {
        membership.publish(m.id, name: m.name, clientURLs: m.clientUrls)
        try backend.setMeta(.membership, try membership.encoded())
    }
}

extension EtcdServer {
    /// etcd's `snapshot restore` for a member of a new cluster: the
    /// restored backend gets the identity `config` derives (its member ID,
    /// the cluster's ID from --initial-cluster and the token) and that
    /// cluster's members, unstarted; the keys and revisions stay. Each
    /// member of the new cluster is restored from the same snapshot with
    /// its own --name and --initial-advertise-peer-urls, then started
    /// (with or without the bootstrap flags: the data dir has them).
    public static func restoreIdentity(dataDir: String, config: ServerConfig) throws {
        let backend = try LMDBBackend(path: dataDir + "/member/snap/db", mapSize: Int(max(config.quotaBackendBytes, 1 << 30)))
        defer { backend.close() }
        let cluster = config.effectiveInitialCluster
        let memberID = ClusterIdentity.memberID(peerURLs: config.initialAdvertisePeerURLs, token: config.initialClusterToken)
        var membership = Membership()
        for m in cluster.memberIDs(token: config.initialClusterToken) {
            let urls = cluster.members.first { $0.name == m.name }!.peerURLs
            membership.apply(.add(Membership.Member(id: m.id, name: m.name, peerURLs: urls)))
        }
        try backend.setMetaInt64(.memberID, Int64(bitPattern: memberID))
        try backend.setMetaInt64(.clusterID, Int64(bitPattern: cluster.clusterID(token: config.initialClusterToken)))
        try backend.setMeta(.membership, try membership.encoded())
        try backend.setMeta(.memberAttributes, try Etcdserverpb_MemberListResponse().serializedBytes())
        try backend.commit()
    }
}
