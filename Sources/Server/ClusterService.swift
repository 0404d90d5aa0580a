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
        m.clientUrls = (config.advertiseClientURLs ?? listenedClientURLs ?? config.listenClientURLs).map(\.description)
        return m
    }
}
