import Foundation
import Testing

/// Managing users, roles and permissions through etcdctl 3.4 prints what it
/// prints against a real etcd 3.4, errors included, and survives a restart.
@Suite struct AuthManagementTests {
    static let commands: [[String]] = [
        ["user", "add", "alice:pw"],
        ["user", "add", "alice:pw"],
        ["user", "add", "bob", "--no-password"],
        ["role", "add", "pods"],
        ["role", "add", "pods"],
        ["role", "grant-permission", "pods", "readwrite", "/registry/pods/", "--prefix"],
        ["role", "grant-permission", "pods", "read", "/a", "/c"],
        ["role", "grant-permission", "nope", "read", "/a"],
        ["user", "grant-role", "alice", "pods"],
        ["user", "grant-role", "alice", "nope"],
        ["user", "get", "alice"],
        ["user", "get", "carol"],
        ["role", "get", "pods"],
        ["role", "get", "root"],
        ["user", "list"],
        ["role", "list"],
        ["user", "revoke-role", "alice", "nope"],
        ["role", "revoke-permission", "pods", "/a", "/c"],
        ["role", "revoke-permission", "pods", "/a", "/c"],
        ["role", "get", "pods"],
        ["user", "passwd", "alice", "--interactive=false"],
        ["user", "delete", "bob"],
        ["user", "delete", "bob"],
        ["role", "delete", "pods"],
        ["user", "get", "alice"],
        ["auth", "status"],
    ]

    func session(_ endpoint: String) throws -> [String] {
        try Etcdctl(endpoint: endpoint).transcript(of: Self.commands.map { ($0, "newpw\n") })
    }

    @Test func managementPrintsWhatEtcdPrints() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let reference = try ReferenceEtcd()
        defer { reference.stop() }
        let ours = try session(server.endpoint), theirs = try session(reference.endpoint)
        for (o, t) in zip(ours, theirs) { #expect(o == t, "swetcd:\n\(o)\netcd:\n\(t)") }

        // Kept in the backend.
        server.kill()
        let restarted = try ServerProcess(dataDir: server.dataDir)
        defer { restarted.stop() }
        #expect(try Etcdctl(endpoint: restarted.endpoint).run("user", "list").lines == ["alice"])
    }
}
