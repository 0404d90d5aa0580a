import EtcdProto
import Member
import Transport

/// etcd's check that a member starting with no data was not a member of
/// this cluster already: one that lost its data dir and came back with
/// `--initial-cluster-state new` would otherwise start a second log for the
/// same ID (and could vote twice in a term).
extension EtcdServer {
    /// The peer service that answers with the members this one knows, with
    /// the client URLs each has published (etcd's GET /members on the peer
    /// port).
    static let membersPath = "/swetcd.Cluster/Members"

    func membersService() -> GRPCMethod {
        GRPCMethod(.unary) { [unowned self] call, _ in
            var list = Etcdserverpb_MemberListResponse()
            list.header = clusterHeader()
            list.members = listedMembers()
            guard let bytes: [UInt8] = try? list.serializedBytes() else { return call.finish(GRPCStatus(.internal, "cannot encode")) }
            call.respond(bytes)
        }
    }

    /// A member added to a cluster (`member add`) starting with no data:
    /// the cluster's members from the first peer of --initial-cluster that
    /// answers, and its own ID among them, found by its peer URLs (as
    /// etcd's GetClusterFromRemotePeers and ValidateClusterAndAssignIDs).
    static func joinCluster(_ config: ServerConfig, tls: TLSClientContext?, loop: EventLoop,
                            seconds: Double = 10) throws -> (memberID: UInt64, clusterID: UInt64, members: [Etcdserverpb_Member]) {
        let mine = Set(config.initialAdvertisePeerURLs)
        let peers = config.effectiveInitialCluster.members.flatMap(\.peerURLs).filter { !mine.contains($0) }
            .compactMap(ServerConfig.ClientURL.init)
        var list: Etcdserverpb_MemberListResponse?
        var answered = 0
        let connections = peers.map { HTTP2ClientConnection(loop: loop, host: $0.host, port: $0.port, tls: tls) }
        for connection in connections {
            connection.call(membersPath, request: [], timeout: seconds) { result in
                answered += 1
                guard list == nil, case .success(let messages) = result, let first = messages.first,
                      let answer = try? Etcdserverpb_MemberListResponse(serializedBytes: first) else { return }
                list = answer
            }
        }
        _ = loop.run(until: { list != nil || answered == connections.count }, seconds: seconds)
        for connection in connections { connection.close() }
        guard let list else {
            throw ServerError.join("cannot fetch cluster info from peer urls: could not retrieve cluster information from the given URLs")
        }
        guard let me = list.members.first(where: { $0.peerUrls.sorted() == config.initialAdvertisePeerURLs.sorted() }) else {
            throw ServerError.join("error validating peerURLs \(config.initialAdvertisePeerURLs): the cluster has no member with these peer URLs (add it first with member add)")
        }
        return (me.id, list.header.clusterID, list.members)
    }

    /// Asks each peer, for at most `seconds` in all (etcd's bootstrap
    /// timeout), whether it knows `id` with client URLs: a member that
    /// published them once has been bootstrapped. Peers not up yet (a new
    /// cluster starting) answer nothing, which is no.
    static func isBootstrapped(_ id: UInt64, peers: [(host: String, port: UInt16)], tls: TLSClientContext?, loop: EventLoop,
                               seconds: Double = 1) -> Bool {
        var answered = 0, bootstrapped = false
        let connections = peers.map { HTTP2ClientConnection(loop: loop, host: $0.host, port: $0.port, tls: tls) }
        for connection in connections {
            connection.call(membersPath, request: [], timeout: seconds) { result in
                answered += 1
                guard case .success(let messages) = result, let first = messages.first,
                      let list = try? Etcdserverpb_MemberListResponse(serializedBytes: first) else { return }
                if list.members.contains(where: { $0.id == id && !$0.clientUrls.isEmpty }) { bootstrapped = true }
            }
        }
        _ = loop.run(until: { bootstrapped || answered == connections.count }, seconds: seconds)
        for connection in connections { connection.close() }
        return bootstrapped
    }
}
