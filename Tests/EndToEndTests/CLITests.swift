import Foundation
import Testing

/// swetcdctl where etcdctl 3.4 cannot be its reference: snapshots in
/// swetcd's format, and the TLS, user and environment settings against a
/// mutual-TLS member with auth enabled (compared with etcdctl's output).
@Suite struct CLITests {
    func swetcdctl(_ arguments: [String], environment: [String: String] = [:], input: String? = nil) throws -> CommandResult {
        try runCommand(CLIGoldenTests.swetcdctl, arguments, environment: environment, input: input)
    }

    /// save → status → restore → a member on the restored dir has the same
    /// revision and HashKV; etcdctl's saved file reads the same.
    @Test func snapshotSaveStatusAndRestore() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let e = Etcdctl(endpoint: server.endpoint)
        for i in 0..<20 { try e.run("put", "/k/\(i % 7)", "v\(i)") }
        try e.run("del", "/k/3")
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcdctl-snap-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }

        let saved = try swetcdctl(["--endpoints", server.endpoint, "snapshot", "save", dir + "/ours.db"])
        #expect(saved.status == 0 && saved.stdout == "Snapshot saved at \(dir)/ours.db\n", "\(saved)")
        #expect(!FileManager.default.fileExists(atPath: dir + "/ours.db.part"))
        _ = try e.run("snapshot", "save", dir + "/theirs.db")
        let status = try swetcdctl(["snapshot", "status", dir + "/ours.db", "-w", "json"])
        let fields = try #require(try JSONSerialization.jsonObject(with: Data(status.stdout.utf8)) as? [String: Any], "\(status)")
        #expect(fields["revision"] as? Int == 22)
        #expect((fields["totalKey"] as? Int ?? 0) >= 21, "every revision of every key, and meta")
        let theirs = try swetcdctl(["snapshot", "status", dir + "/theirs.db"])
        let ours = try swetcdctl(["snapshot", "status", dir + "/ours.db"])
        #expect(theirs.stdout == ours.stdout && ours.stdout.split(separator: ",").count == 4, "\(ours) \(theirs)")

        let restored = dir + "/restored"
        #expect(try swetcdctl(["snapshot", "restore", dir + "/ours.db", "--data-dir", restored]).status == 0)
        let again = try swetcdctl(["snapshot", "restore", dir + "/ours.db", "--data-dir", restored])
        #expect(again.status == 1 && again.stderr == "Error: data-dir \"\(restored)\" exists\n", "\(again)")
        var damaged = try Data(contentsOf: URL(fileURLWithPath: dir + "/ours.db"))
        damaged[100] ^= 0xff
        try damaged.write(to: URL(fileURLWithPath: dir + "/damaged.db"))
        let refused = try swetcdctl(["snapshot", "status", dir + "/damaged.db"])
        #expect(refused.status == 1 && refused.stderr.contains("SHA-256 mismatch"), "\(refused)")

        let member = try ServerProcess(dataDir: restored)
        defer { member.stop() }
        let hash = { (endpoint: String) in try Etcdctl(endpoint: endpoint).run("endpoint", "hashkv", "-w", "json").stdout }
        let original = try hash(server.endpoint), copy = try hash(member.endpoint)
        #expect(original.contains("\"revision\":22") && copy.contains("\"revision\":22"))
        let digits = { (s: String) in s.components(separatedBy: "\"hash\":").last?.prefix { $0.isNumber } }
        #expect(digits(original) == digits(copy) && digits(original)?.isEmpty == false, "\(original) \(copy)")
    }

    /// The kubeadm-style call with certificate flags, the same through
    /// ETCDCTL_* variables, and --user after auth enable, each printing what
    /// etcdctl prints.
    @Test func tlsUserAndEnvironment() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let port = try ReferenceEtcd.freePort()
        let server = try ServerProcess(arguments: ["--listen-client-urls", "https://127.0.0.1:\(port)", "--cert-file", certs.cert,
                                                   "--key-file", certs.key, "--trusted-ca-file", certs.ca, "--client-cert-auth"])
        defer { server.stop() }
        let tls = ["--cacert", certs.ca, "--cert", certs.cert, "--key", certs.key]
        let etcdctl = Etcdctl(endpoint: server.endpoint)
        for (k, v) in [("/registry/pods/a", "1"), ("/registry/pods/b", "2"), ("/other", "3")] {
            _ = try etcdctl.run(arguments: ["put", k, v] + tls)
        }
        func both(_ arguments: [String], environment: [String: String] = [:]) throws -> (CommandResult, CommandResult) {
            let ours = try swetcdctl(["--endpoints", server.endpoint] + arguments, environment: environment)
            let theirs = try runCommand("/usr/bin/etcdctl", ["--endpoints", server.endpoint] + arguments,
                                        environment: environment.merging(["ETCDCTL_API": "3"]) { $1 })
            return (ours, theirs)
        }
        let seed = try both(["get", "/", "--prefix", "--keys-only", "--limit=10"] + tls)
        #expect(seed.0.stdout == seed.1.stdout && seed.0.stdout == "/other\n\n/registry/pods/a\n\n/registry/pods/b\n\n", "\(seed)")
        let environment = ["ETCDCTL_CACERT": certs.ca, "ETCDCTL_CERT": certs.cert, "ETCDCTL_KEY": certs.key,
                           "ETCDCTL_WRITE_OUT": "json"]
        let viaEnvironment = try both(["get", "/other"], environment: environment)
        #expect(viaEnvironment.0.stdout == viaEnvironment.1.stdout && viaEnvironment.0.stdout.hasPrefix("{\"header\""))
        let noCertificate = try swetcdctl(["--endpoints", server.endpoint, "--cacert", certs.ca, "--dial-timeout=2s",
                                           "--command-timeout=3s", "get", "/other"])
        #expect(noCertificate.status != 0 && noCertificate.stdout.isEmpty, "\(noCertificate)")
        let skipVerify = try both(["--insecure-skip-tls-verify", "--cert", certs.cert, "--key", certs.key, "get", "/other",
                                   "--print-value-only"])
        #expect(skipVerify.0.stdout == "3\n" && skipVerify.1.stdout == "3\n", "\(skipVerify)")

        for step in [["user", "add", "root:pw"], ["auth", "enable"]] {
            let r = try swetcdctl(["--endpoints", server.endpoint] + tls + step)
            #expect(r.status == 0, "\(step): \(r)")
        }
        // The certificate's CN (swetcd) is no user; root's password is.
        let denied = try both(["get", "/other"] + tls)
        #expect(denied.0.stderr == "Error: etcdserver: permission denied\n" && denied.0.status == denied.1.status, "\(denied)")
        let asRoot = try both(["--user", "root:pw", "get", "/other", "--print-value-only"] + tls)
        #expect(asRoot.0.stdout == "3\n" && asRoot.1.stdout == "3\n")
        let wrong = try both(["--user", "root:nope", "get", "/other"] + tls)
        #expect(wrong.0.status == 2 && wrong.1.status == 2, "\(wrong)")
        #expect(wrong.0.stderr == "Error: etcdserver: authentication failed, invalid user ID or password\n")
        let viaUserVariables = try both(["get", "/other", "--print-value-only"] + tls,
                                        environment: ["ETCDCTL_USER": "root", "ETCDCTL_PASSWORD": "pw"])
        #expect(viaUserVariables.0.stdout == "3\n" && viaUserVariables.1.stdout == "3\n", "\(viaUserVariables)")
    }
}
