import Foundation
import Testing

/// Leases through the real etcdctl 3.4: the same commands print the same
/// against swetcd as against a real etcd 3.4; expiry deletes keys; a
/// lease's remaining TTL survives kill -9.
@Suite struct LeaseTests {
    /// Runs the lease commands on `endpoint`; returns, per command, its
    /// stdout and its error line (the lease's ID replaced by "<id>"), then
    /// what a watcher of the leased keys printed.
    func leaseSession(on endpoint: String) throws -> [String] {
        let e = Etcdctl(endpoint: endpoint)
        let grant = try e.run("lease", "grant", "60")
        guard let id = grant.stdout.split(separator: " ").dropFirst().first.map(String.init) else {
            throw E2EError("lease grant printed \(grant)")
        }
        func norm(_ r: CommandResult) -> String {
            let error = r.stderr.split(separator: "\n").last { $0.hasPrefix("Error:") }.map(String.init) ?? ""
            // Seconds left depend on how long the commands before took.
            let text = "\(r.status) \(r.stdout)\(error)".replacingOccurrences(of: id, with: "<id>")
            var canonical = text.replacingOccurrences(of: #"remaining\((5[0-9]|60)s\)"#, with: "remaining(50-60s)",
                                                      options: .regularExpression)
            // etcd lists a lease's keys in Go map order: compare them sorted.
            if let open = canonical.range(of: "attached keys(["), let close = canonical.range(of: "])", range: open.upperBound..<canonical.endIndex) {
                let keys = canonical[open.upperBound..<close.lowerBound].split(separator: " ").sorted()
                canonical.replaceSubrange(open.upperBound..<close.lowerBound, with: keys.joined(separator: " "))
            }
            return canonical
        }
        var out = [norm(grant)]
        let watcher = try BackgroundEtcdctl(endpoint: endpoint, ["watch", "--prefix", "lease/"])
        usleep(300_000)
        let commands: [[String]] = [
            ["put", "--lease=\(id)", "lease/a", "1"],
            ["put", "--lease=\(id)", "lease/b", "2"],
            ["put", "--lease=\(id)", "lease/c", "3"],
            ["put", "lease/c", "no lease now"],  // leaves the lease
            ["put", "--lease=123456", "lease/d", "4"],  // no such lease
            ["lease", "timetolive", id, "--keys"],
            ["lease", "keep-alive", "--once", id],
            ["lease", "list"],
            ["lease", "revoke", id],
            ["get", "lease/", "--prefix"],
            ["lease", "timetolive", id],
            ["lease", "revoke", id],
            ["lease", "keep-alive", "--once", id],
            ["lease", "grant", "9000000001"],
        ]
        for c in commands { out.append(norm(try e.run(arguments: c))) }
        out.append(watcher.finish(expectingLines: 12))
        return out
    }

    @Test func leaseCommandsPrintWhatEtcdPrints() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let reference = try ReferenceEtcd()
        defer { reference.stop() }
        let ours = try leaseSession(on: server.endpoint)
        let theirs = try leaseSession(on: reference.endpoint)
        #expect(ours.count == theirs.count)
        for (o, t) in zip(ours, theirs) { #expect(o == t, "swetcd:\n\(o)\netcd:\n\(t)") }
        // The revoke deleted both leased keys in one revision, seen by the watcher.
        #expect(ours.last?.components(separatedBy: "DELETE").count == 3)
    }

    /// A lease that is not kept alive expires: its keys go (watchers see
    /// the DELETE), other keys stay.
    @Test func anExpiredLeaseDeletesItsKeys() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let e = Etcdctl(endpoint: server.endpoint)
        let id = try #require(try e.run("lease", "grant", "2").stdout.split(separator: " ").dropFirst().first.map(String.init))
        try e.run("put", "--lease=\(id)", "tmp/a", "1")
        try e.run("put", "tmp/b", "2")
        let watcher = try BackgroundEtcdctl(endpoint: server.endpoint, ["watch", "--prefix", "tmp/"])
        usleep(300_000)
        let granted = Date()
        var gone = false
        var checks = 0
        while !gone && Date().timeIntervalSince(granted) < 20 {
            gone = try e.run("get", "tmp/a").stdout.isEmpty
            checks += 1
            if !gone { usleep(100_000) }
        }
        let lease = gone ? "" : try e.run("lease", "timetolive", id).stdout
        #expect(gone, "after \(checks) reads in \(Date().timeIntervalSince(granted)) s: \(lease)")
        // Not before its TTL (2 s from the grant, which came earlier still).
        #expect(Date().timeIntervalSince(granted) > 1.2)
        #expect(try e.run("get", "tmp/b").lines == ["tmp/b", "2"])
        #expect(try e.run("lease", "list").stdout == "found 0 leases\n")
        #expect(watcher.finish(expectingLines: 2).hasPrefix("DELETE\ntmp/a\n"))
    }

    /// The remaining TTL is checkpointed and a restart resumes it, even
    /// after kill -9; the lease keeps its keys.
    @Test func remainingTTLSurvivesKillNine() throws {
        let server = try ServerProcess(arguments: ["--experimental-lease-checkpoint-interval", "100ms"])
        defer { server.stop() }
        var e = Etcdctl(endpoint: server.endpoint)
        let id = try #require(try e.run("lease", "grant", "100").stdout.split(separator: " ").dropFirst().first.map(String.init))
        try e.run("put", "--lease=\(id)", "held", "1")
        sleep(4)
        server.kill()
        let restarted = try ServerProcess(arguments: ["--experimental-lease-checkpoint-interval", "100ms"],
                                          dataDir: server.dataDir)
        defer { restarted.stop() }
        e = Etcdctl(endpoint: restarted.endpoint)
        let line = try e.run("lease", "timetolive", id, "--keys").stdout
        // "lease <id> granted with TTL(100s), remaining(95s), attached keys([held])"
        let remaining = try #require(line.range(of: "remaining(").map { Int(line[$0.upperBound...].prefix { $0.isNumber }) } ?? nil,
                                     "timetolive printed \(line)")
        #expect(remaining <= 96 && remaining >= 85, "\(line)")
        #expect(line.contains("granted with TTL(100s)") && line.contains("attached keys([held])"), "\(line)")
    }
}
