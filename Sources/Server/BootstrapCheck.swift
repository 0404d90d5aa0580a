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
            list.members = members.map { m in
                var member = m.id == memberID ? selfMember : Etcdserverpb_Member()
                member.id = m.id
                member.name = m.name
                member.peerUrls = m.peerURLs
                if m.id != memberID { member.clientUrls = publishedAttributes[m.id]?.clientUrls ?? [] }
                return member
            }
            guard let bytes: [UInt8] = try? list.serializedBytes() else { return call.finish(GRPCStatus(.internal, "cannot encode")) }
            call.respond(bytes)
        }
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
