import EtcdProto
import Transport

/// etcdserverpb.Cluster: one member, until Raft brings more.
extension EtcdServer {
    func registerCluster() {
        let cluster = "etcdserverpb.Cluster"
        unary(cluster, "MemberList") { [unowned self] (_: Etcdserverpb_MemberListRequest, _) -> Reply<Etcdserverpb_MemberListResponse> in
            var response = Etcdserverpb_MemberListResponse()
            response.header = header()
            response.members = [selfMember]
            return .now(response)
        }
        for method in ["MemberAdd", "MemberRemove", "MemberUpdate", "MemberPromote"] {
            register(cluster, method, .unary) { [unowned self] call, _ in
                let key = Metrics.CallKey(type: "unary", service: cluster, method: method)
                metrics.callStarted(key)
                finish(call, key, status: GRPCStatus(.unimplemented, "swetcd: \(method) needs clustering, which is not built yet"))
            }
        }
    }

    var selfMember: Etcdserverpb_Member {
        var m = Etcdserverpb_Member()
        m.id = memberID
        m.name = config.name
        m.peerUrls = ["http://localhost:2380"]
        m.clientUrls = config.clientURLs.map(\.description)
        return m
    }
}
