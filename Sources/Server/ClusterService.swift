import EtcdProto
import Transport

/// etcdserverpb.Cluster: one member, until Raft brings more.
extension EtcdServer {
    func registerCluster() {
        let cluster = "etcdserverpb.Cluster"
        unary(cluster, "MemberList", access: .authenticated) { [unowned self] (_: Etcdserverpb_MemberListRequest, _) -> Reply<Etcdserverpb_MemberListResponse> in
            var response = Etcdserverpb_MemberListResponse()
            response.header = header()
            response.header.revision = 0  // etcd's cluster answers carry no revision
            response.members = members.map { m in
                guard m.id != memberID else { return selfMember }
                var other = Etcdserverpb_Member()
                other.id = m.id
                other.name = m.name
                other.peerUrls = m.peerURLs
                other.clientUrls = publishedAttributes[m.id]?.clientUrls ?? []
                return other
            }
            return .now(response)
        }
        refuseUnbuilt(cluster, ["MemberAdd", "MemberRemove", "MemberUpdate", "MemberPromote"], needs: "clustering")
    }

    var selfMember: Etcdserverpb_Member {
        var m = Etcdserverpb_Member()
        m.id = memberID
        m.name = config.name
        m.peerUrls = config.initialAdvertisePeerURLs
        m.clientUrls = clientURLs
        return m
    }

    /// The client URLs this member serves, as clients are told them.
    var clientURLs: [String] { (config.advertiseClientURLs ?? listenedClientURLs ?? config.listenClientURLs).map(\.description) }

    /// Publishes this member's name and client URLs through the log (etcd
    /// does at start), so every member's MemberList names them; again
    /// until it is applied, whenever a leader is known.
    func publishAttributesIfNeeded() {
        guard !attributesPublished, !attributesPublishing, member.leader != 0, listenedClientURLs != nil else { return }
        var m = Etcdserverpb_Member()
        m.id = memberID
        m.name = config.name
        m.clientUrls = clientURLs
        if let known = publishedAttributes[memberID], known.name == m.name, known.clientUrls == m.clientUrls {
            attributesPublished = true
            return
        }
        guard let bytes: [UInt8] = try? m.serializedBytes() else { return }
        attributesPublishing = true
        propose(.memberAttributes, bytes, .memberAttributes(m)) { [unowned self] outcome in
            attributesPublishing = false
            if case .success = outcome { attributesPublished = true }
        }
    }

    func applyMemberAttributes(_ m: Etcdserverpb_Member) throws {
        publishedAttributes[m.id] = m
        var all = Etcdserverpb_MemberListResponse()
        all.members = publishedAttributes.keys.sorted().map { publishedAttributes[$0]! }
        try backend.setMeta(.memberAttributes, try all.serializedBytes())
    }

    func loadMemberAttributes() throws {
        guard let bytes = try backend.meta(.memberAttributes) else { return }
        for m in try Etcdserverpb_MemberListResponse(serializedBytes: bytes).members { publishedAttributes[m.id] = m }
    }
}
