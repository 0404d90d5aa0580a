import Foundation
import Testing
import TestSupport

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

    /// A command left running, its output in a file; `interrupt` sends
    /// SIGINT and waits for it.
    final class Background {
        let child: ChildProcess
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("bg-\(UUID().uuidString)").path

        init(_ binary: String, _ arguments: [String]) throws {
            child = try ChildProcess(binary, arguments, environment: ["ETCDCTL_API": "3"], stdout: .file(path))
        }

        var output: String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

        /// Waits up to `seconds` for the output to contain `text`.
        func waitFor(_ text: String, seconds: Double = 10) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if output.contains(text) { return true }
                usleep(20_000)
            }
            return false
        }

        func interrupt() -> Int32 {
            child.signal(SIGINT)
            defer { try? FileManager.default.removeItem(atPath: path) }
            return child.waitUntilExit().status
        }
    }

    /// swetcdctl's lock and elect and etcdctl's take turns on the same
    /// names: one holder at a time, in order, observers seeing the same
    /// leaders.
    @Test func lockAndElectWorkWithEtcdctls() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let ours = CLIGoldenTests.swetcdctl, theirs = "/usr/bin/etcdctl", ep = "--endpoints=\(server.endpoint)"
        let holder = try Background(ours, [ep, "lock", "L"])
        #expect(holder.waitFor("L/"), "swetcdctl holds the lock")
        let waiter = try Background(theirs, [ep, "lock", "L", "--", "sh", "-c", "echo etcdctl has $ETCD_LOCK_KEY"])
        usleep(700_000)
        #expect(waiter.output.isEmpty, "etcdctl waits while swetcdctl holds it")
        #expect(holder.interrupt() == 0)
        #expect(waiter.waitFor("etcdctl has L/"), "then etcdctl gets it")
        _ = waiter.interrupt()
        let failing = try swetcdctl([ep, "lock", "L", "--", "sh", "-c", "exit 3"])
        #expect(failing.status == 1 && failing.stderr == "Error: exit status 3\n", "the command's failure: \(failing)")
        #expect(try Etcdctl(endpoint: server.endpoint).run("get", "L", "--prefix").stdout.isEmpty, "every lock key gone")

        let watchers = [try Background(theirs, [ep, "elect", "-l", "E"]), try Background(ours, [ep, "elect", "-l", "E"])]
        usleep(500_000)
        let first = try Background(ours, [ep, "elect", "E", "first"])
        #expect(first.waitFor("first"))
        let second = try Background(theirs, [ep, "elect", "E", "second"])
        usleep(700_000)
        #expect(second.output.isEmpty, "the second candidate waits")
        #expect(first.interrupt() == 0)
        #expect(second.waitFor("second"), "and leads once the first resigns")
        for w in watchers { #expect(w.waitFor("second")) }
        let seen = watchers.map { $0.output.replacingOccurrences(of: "E/[0-9a-f]+\n", with: "E/ID\n", options: .regularExpression) }
        #expect(seen[0] == seen[1] && seen[0] == "E/ID\nfirst\nE/ID\nsecond\n", "\(seen)")
        _ = second.interrupt()
        #expect(watchers.map { $0.interrupt() } == [0, 0])
    }

    /// `check perf` (shortened: a hidden --duration) passes against swetcd
    /// at the medium load, prints etcdctl's four verdict lines, and leaves
    /// no keys; a used prefix is refused as etcdctl refuses it.
    @Test func checkPerf() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let ep = "--endpoints=\(server.endpoint)"
        let r = try swetcdctl([ep, "check", "perf", "--load", "m", "--duration", "3"])
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(r.status == 0 && lines.count == 4 && lines.last == "PASS", "\(r)")
        #expect(lines.first?.hasPrefix("PASS: Throughput is ") == true && lines[1].hasPrefix("PASS: Slowest request took "))
        let left = try Etcdctl(endpoint: server.endpoint).run("get", "/etcdctl-check-perf/", "--prefix", "--keys-only")
        #expect(left.status == 0 && left.stdout.isEmpty, "no keys left: \(left)")
        _ = try Etcdctl(endpoint: server.endpoint).run("put", "/etcdctl-check-perf/x", "1")
        let used = try swetcdctl([ep, "check", "perf", "--duration", "1"])
        #expect(used.status == 3 && used.stderr.contains("has keys. Delete with etcdctl del --prefix /etcdctl-check-perf/ first"))
        #expect(try swetcdctl([ep, "check", "perf", "--load", "huge"]).status == 4)
    }

    /// The kubeadm-style call with certificate flags, the same through
    /// ETCDCTL_* variables, and --user after auth enable, each printing what
    /// etcdctl prints.
    @Test func tlsUserAndEnvironment() throws {
        let certs = try TestCertificates()
        defer { certs.remove() }
        let server = try certs.mutualTLSServer()
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
        let endpointFromEnvironment = try swetcdctl(["get", "/other"], environment: environment.merging(
            ["ETCDCTL_ENDPOINTS": server.endpoint, "ETCDCTL_WRITE_OUT": "simple"]) { $1 })
        #expect(endpointFromEnvironment.stdout == "/other\n3\n", "\(endpointFromEnvironment)")
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
