import Foundation
import Testing

/// The same bootstrap flags give swetcd and a real etcd 3.4 the same member
/// and cluster IDs, and member list shows the advertised peer URLs.
@Suite struct ClusterIdentityEndToEndTests {
    @Test func memberListShowsTheIDsEtcdDerives() throws {
        let flags = ["--name", "infra1", "--initial-advertise-peer-urls", "http://127.0.0.1:12380",
                     "--initial-cluster", "infra1=http://127.0.0.1:12380", "--initial-cluster-token", "swetcd-test-token"]
        let server = try ServerProcess(arguments: flags)
        defer { server.stop() }
        let reference = try ReferenceEtcd(arguments: flags)
        defer { reference.stop() }
        func members(_ endpoint: String) throws -> (cluster: String, members: [String]) {
            let json = try Etcdctl(endpoint: endpoint).run("member", "list", "-w", "json").stdout
            let cluster = json.firstMatch(of: /"cluster_id":(\d+)/).map { String($0.1) } ?? ""
            let ids = json.matches(of: /"ID":(\d+),"name":"([^"]*)","peerURLs":\[([^\]]*)\]/).map { "\($0.1) \($0.2) \($0.3)" }
            return (cluster, ids)
        }
        let ours = try members(server.endpoint), theirs = try members(reference.endpoint)
        #expect(!ours.cluster.isEmpty && ours.cluster == theirs.cluster, "\(ours) \(theirs)")
        #expect(ours.members == theirs.members && ours.members.count == 1, "\(ours) \(theirs)")
        #expect(ours.members.first?.contains("infra1 \"http://127.0.0.1:12380\"") == true, "\(ours)")
    }
}
