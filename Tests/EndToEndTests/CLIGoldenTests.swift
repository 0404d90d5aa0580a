import Foundation
import Testing
import TestSupport

/// swetcdctl against etcdctl 3.4: the same commands, with the same
/// arguments, against twin swetcd members (one data dir copied, so the same
/// member and cluster IDs and the same history) print the same bytes and
/// exit with the same codes. Masked: lease IDs (random per member),
/// remaining TTLs, durations, database sizes and the version line.
// One test at a time: each runs a few hundred processes, and the whole
// suite's timing-sensitive tests run alongside.
@Suite(.serialized) struct CLIGoldenTests {
    /// The built swetcdctl, next to the test binary.
    static var swetcdctl: String {
        URL(fileURLWithPath: ServerProcess.executable).deletingLastPathComponent().appendingPathComponent("swetcdctl").path
    }

    /// A step: arguments (`{LEASE}` is the ID the last `lease grant`
    /// printed on that side) and standard input.
    typealias Step = (arguments: [String], input: String?)

    static let kv: [Step] = [
        (["put", "foo", "bar"], nil),
        (["put", "foo", "baz", "--prev-kv"], nil),
        (["put", "foo2", "a<b>&\"c\"\\\u{e9}"], nil),
        (["put", "/registry/pods/a", "1"], nil),
        (["put", "/registry/pods/b", "2"], nil),
        (["put", "/registry/pods/c", "3", "-w", "json"], nil),
        (["put", "/registry/pods/d", "--", "-4"], nil),
        (["put", "stdin"], "from standard input\n"),
        (["put", "foo", "again", "--prev-kv", "-w", "fields"], nil),
        (["put"], nil),
        (["put", "k", "v", "--lease=zz"], nil),
        (["put", "", "v"], nil),
        (["get", "foo"], nil),
        (["get", "foo", "-w", "json"], nil),
        (["get", "foo", "-w", "fields"], nil),
        (["get", "foo", "--prefix", "-w", "json"], nil),
        (["get", "foo", "--prefix", "--hex"], nil),
        (["get", "/", "--prefix", "--keys-only", "--limit=10"], nil),
        (["get", "/registry/pods/", "--prefix", "--print-value-only"], nil),
        (["get", "/registry/pods/", "--prefix", "--limit", "2", "-w", "json"], nil),
        (["get", "/registry/pods/", "--prefix", "--sort-by=VALUE", "--order=DESCEND"], nil),
        (["get", "/registry/pods/", "--prefix", "--sort-by=modify", "--order=ascend", "--keys-only"], nil),
        (["get", "/registry/pods/b", "--from-key"], nil),
        (["get", "/registry/pods/a", "/registry/pods/c"], nil),
        (["get", "foo", "--rev=2"], nil),
        (["get", "foo", "--rev=1000"], nil),
        (["get", "foo", "--consistency=s", "--write-out=json"], nil),
        (["get", "", "--prefix", "--keys-only"], nil),
        (["get"], nil),
        (["get", "a", "b", "--prefix"], nil),
        (["get", "a", "--prefix", "--from-key"], nil),
        (["get", "a", "--consistency=x"], nil),
        (["get", "a", "--order=UP"], nil),
        (["get", "a", "--sort-by=SIZE"], nil),
        (["get", "foo", "-w", "table"], nil),
        (["get", "foo", "-w", "json", "--print-value-only"], nil),
        (["get", "foo", "-w", "yaml"], nil),
        (["--endpoints=ENDPOINT", "get", "foo", "--print-value-only=true"], nil),
        (["del", "nothing"], nil),
        (["del", "foo2", "--prev-kv"], nil),
        (["del", "/registry/pods/d", "--prev-kv", "-w", "json"], nil),
        (["del", "a", "b", "c"], nil),
        (["del", "/registry/pods/c", "--prev-kv", "-w", "fields"], nil),
        (["txn"], "value(\"foo\") = \"again\"\n\nput foo txn\nget /registry/pods/ --prefix\n\ndel foo\n\n"),
        (["txn", "-w", "json"], "version(\"foo\") > \"100\"\n\nput foo never\n\nget foo --print-value-only\ndel stdin --prev-kv\n\n"),
        (["txn", "-i"], "mod(\"foo\") != \"0\"\ncreate(\"foo\") < \"1000\"\n\nput \"quoted key\" \"quoted\\tvalue\"\n\n\n"),
        (["txn", "-w", "fields"], "\nget \"quoted key\"\n\n\n"),
        (["txn"], "bogus\n\n\n\n"),
        (["txn"], "value(\"foo\") = \"x\"\n\nmove foo\n\n\n"),
        (["txn"], "value(\"foo\") = \"x\"\n"),
        (["txn", "extra"], nil),
        (["compaction", "3"], nil),
        (["compaction", "3"], nil),
        (["compaction", "--physical", "4"], nil),
        (["compaction"], nil),
        (["get", "foo", "--rev=2"], nil),
        (["watch", "foo", "--rev=2"], nil),
        (["watch", "foo", "--rev=2", "-w", "json"], nil),
        (["watch", "a", "b", "--prefix"], nil),
        (["watch"], nil),
        (["watch", "foo", "--"], nil),
    ]

    static let leasesAndCluster: [Step] = [
        (["lease", "grant", "100"], nil),
        (["put", "leased", "x", "--lease={LEASE}"], nil),
        (["lease", "timetolive", "{LEASE}"], nil),
        (["lease", "timetolive", "{LEASE}", "--keys"], nil),
        (["lease", "timetolive", "{LEASE}", "--keys", "-w", "json"], nil),
        (["lease", "list"], nil),
        (["lease", "list", "-w", "json"], nil),
        (["lease", "keep-alive", "--once", "{LEASE}"], nil),
        (["lease", "keep-alive", "--once", "{LEASE}", "-w", "json"], nil),
        (["lease", "revoke", "{LEASE}"], nil),
        (["lease", "timetolive", "{LEASE}"], nil),
        (["lease", "keep-alive", "--once", "{LEASE}"], nil),
        (["lease", "revoke", "{LEASE}"], nil),
        (["lease", "grant", "100", "-w", "json"], nil),
        (["lease", "grant", "100", "-w", "fields"], nil),
        (["lease", "grant"], nil),
        (["lease", "grant", "ten"], nil),
        (["lease", "revoke", "xyz"], nil),
        (["get", "leased"], nil),
        (["member", "list"], nil),
        (["member", "list", "-w", "json"], nil),
        (["member", "list", "-w", "table"], nil),
        (["member", "list", "-w", "fields"], nil),
        (["endpoint", "status"], nil),
        (["endpoint", "status", "-w", "json"], nil),
        (["endpoint", "status", "-w", "table"], nil),
        (["endpoint", "status", "--cluster"], nil),
        (["endpoint", "hashkv"], nil),
        (["endpoint", "hashkv", "-w", "json"], nil),
        (["endpoint", "hashkv", "-w", "table", "--rev=3"], nil),
        (["endpoint", "health"], nil),
        (["endpoint", "health", "-w", "json"], nil),
        (["endpoint", "health", "-w", "table"], nil),
        (["endpoint", "health", "-w", "fields"], nil),
        (["endpoint", "status", "-w", "fields"], nil),
        (["endpoint", "hashkv", "-w", "fields"], nil),
        (["snapshot", "status", "/nonexistent"], nil),
        (["snapshot", "status"], nil),
        (["snapshot", "restore", "/nonexistent", "--data-dir", "/nonexistent-dir"], nil),
        (["snapshot", "restore"], nil),
        (["alarm", "list"], nil),
        (["alarm", "disarm"], nil),
        (["defrag"], nil),
        (["defrag", "--cluster"], nil),
        (["snapshot", "save", "{DIR}/snapshot.db"], nil),
        (["snapshot", "save"], nil),
        (["lock", "L", "--", "sh", "-c", "echo held"], nil),
        (["lock", "L", "--", "sh", "-c", "exit 3"], nil),
        (["lock"], nil),
        (["elect"], nil),
        (["elect", "E"], nil),
        (["elect", "E", "proposal", "-l"], nil),
        (["check", "perf", "--load", "huge"], nil),
        (["put", "/etcdctl-check-perf/x", "1"], nil),
        (["check", "perf"], nil),
        (["version"], nil),
    ]

    static let auth: [Step] = [
        (["user", "add", "root:pw"], nil),
        (["user", "add", "alice", "--interactive=false"], "secret\n"),
        (["user", "add", "bob", "--new-user-password=pw"], nil),
        (["user", "add", "carol", "--no-password"], nil),
        (["user", "add", ":pw"], nil),
        (["user", "add"], nil),
        (["role", "add", "pods"], nil),
        (["role", "grant-permission", "pods", "readwrite", "/registry/pods/", "--prefix"], nil),
        (["role", "grant-permission", "pods", "read", "/config", "/configz"], nil),
        (["role", "grant-permission", "pods", "write", "/logs/", "--from-key"], nil),
        (["role", "grant-permission", "pods", "read", "", "--prefix"], nil),
        (["role", "grant-permission", "pods", "execute", "/x"], nil),
        (["role", "grant-permission", "pods", "read", "/x", "/y", "--prefix"], nil),
        (["role", "get", "pods"], nil),
        (["role", "get", "pods", "-w", "json"], nil),
        (["role", "revoke-permission", "pods", "", "--prefix"], nil),
        (["role", "revoke-permission", "pods", "/config", "/configz"], nil),
        (["role", "revoke-permission", "pods", "/logs/", "--from-key"], nil),
        (["role", "list"], nil),
        (["role", "list", "-w", "fields"], nil),
        (["role", "get", "pods", "-w", "fields"], nil),
        (["role", "add", "extra", "-w", "fields"], nil),
        (["role", "get", "extra", "-w", "table"], nil),
        (["role", "delete", "extra", "-w", "json"], nil),
        (["user", "add", "dave:pw", "-w", "fields"], nil),
        (["user", "get", "dave", "-w", "fields"], nil),
        (["user", "list", "-w", "fields"], nil),
        (["user", "delete", "dave", "-w", "fields"], nil),
        (["user", "grant-role", "alice", "pods"], nil),
        (["user", "get", "alice"], nil),
        (["user", "get", "alice", "--detail"], nil),
        (["user", "get", "alice", "-w", "json"], nil),
        (["user", "list"], nil),
        (["user", "list", "-w", "json"], nil),
        (["user", "passwd", "alice", "--interactive=false"], "newer\n"),
        (["auth", "enable"], nil),
        (["get", "foo"], nil),
        (["--user", "alice:newer", "put", "/registry/pods/x", "1"], nil),
        (["--user", "alice:secret", "get", "/registry/pods/x"], nil),
        (["--user", "alice", "--password", "newer", "get", "foo"], nil),
        (["--user", "root:pw", "user", "revoke-role", "alice", "pods"], nil),
        (["--user", "root:pw", "user", "delete", "bob"], nil),
        (["--user", "root:pw", "role", "delete", "pods"], nil),
        (["--user", "root:pw", "auth", "disable"], nil),
        (["auth", "disable"], nil),
        (["user", "delete", "nobody"], nil),
    ]

    /// What a person sees, with what must differ between members masked.
    static func transcript(_ binary: String, _ endpoint: String, _ steps: [Step]) throws -> [String] {
        var lease = ""
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("golden-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        return try steps.map { step in
            let arguments = step.arguments.map {
                $0.replacingOccurrences(of: "{LEASE}", with: lease).replacingOccurrences(of: "ENDPOINT", with: endpoint)
                    .replacingOccurrences(of: "{DIR}", with: directory)
            }
            let r = try runCommand(binary, ["--endpoints=\(endpoint)"] + arguments, environment: ["ETCDCTL_API": "3"],
                                   input: step.input)
            if arguments.starts(with: ["lease", "grant"]), let id = r.stdout.split(separator: " ").dropFirst().first,
               id.count == 16 {
                lease = String(id)
            }
            var text = "\(step.arguments.joined(separator: " ")) -> \(r.status)\n\(r.stdout)"
            text += r.stderr.split(separator: "\n").filter { !$0.hasPrefix("{") }.map { $0 + "\n" }.joined()
            return mask(text.replacingOccurrences(of: directory, with: "DIR"), lease: lease, endpoint: endpoint)
        }
    }

    static func mask(_ text: String, lease: String, endpoint: String) -> String {
        var t = text.replacingOccurrences(of: endpoint, with: "ENDPOINT")
        if let id = UInt64(lease, radix: 16) {
            t = t.replacingOccurrences(of: lease, with: "LEASE").replacingOccurrences(of: String(id), with: "LEASE")
        }
        let patterns = [
            (#"[0-9a-f]{16} granted"#, "LEASE granted"), (#"\"ID\":\d+"#, "\"ID\":LEASE"), (#"\"ID\" : \d+"#, "\"ID\" : ID"),
            (#"\"hash\":\d+"#, "\"hash\":H"), (#"ENDPOINT, \d+\n"#, "ENDPOINT, H\n"), (#"\| ENDPOINT \| +\d+ \|"#, "| ENDPOINT | H |"),
            (#"remaining\(\d+s\)"#, "remaining(N)"), (#"\"ttl\":\d+"#, "\"ttl\":N"),
            (#"took = [0-9.]+[µnm]?s"#, "took = T"), (#"\"Took\" : [0-9.]+[µnm]?s"#, "\"Took\" : T"), (#"\"Hash\" : \d+"#, "\"Hash\" : H"),
            (#"\"DBSize\" : \d+"#, "\"DBSize\" : N"), (#"\"took\":\"[^\"]*\""#, "\"took\":\"T\""), (#"\| [ 0-9.]+[µnm]?s \|"#, "| T |"),
            (#"\d+(\.\d)? [kMG]?B"#, "SIZE"), (#"\"dbSize\":\d+"#, "\"dbSize\":N"), (#"\"dbSizeInUse\":\d+"#, "\"dbSizeInUse\":N"),
            (#"etcdctl version: .*"#, "etcdctl version: V"), (#"API version: .*"#, "API version: V"),
            (#"\"version\":\"[0-9.]+\""#, "\"version\":\"V\""), (#", 3\.[45]\.\d+, "#, ", V, "), (#"\| 3\.[45]\.\d+ \|"#, "| V |"),
        ]
        for (pattern, replacement) in patterns {
            t = t.replacingOccurrences(of: pattern, with: replacement, options: .regularExpression)
        }
        // Table widths follow the masked values: compare their shape only.
        return t.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            guard line.hasPrefix("+") || line.hasPrefix("|") else { return String(line) }
            return line.replacingOccurrences(of: "-{2,}", with: "--", options: .regularExpression)
                .replacingOccurrences(of: " {2,}", with: " ", options: .regularExpression)
        }.joined(separator: "\n")
    }

    /// Twin members: one started and stopped, its data dir copied.
    static func twins() throws -> (ServerProcess, ServerProcess, () -> Void) {
        let first = try ServerProcess()
        first.stop()
        let copy = first.dataDir + "-twin"
        try FileManager.default.copyItem(atPath: first.dataDir, toPath: copy)
        // No lease checkpoints: they are log entries made every 10 s while a
        // lease lives, so the raft index `endpoint status` prints would
        // depend on how long each side's commands took (a sanitized
        // swetcdctl's side showed 1 to 4 more).
        let quiet = ["--experimental-lease-checkpoint-interval", "0"]
        let a = try ServerProcess(arguments: quiet, dataDir: first.dataDir)
        let b = try ServerProcess(arguments: quiet, dataDir: copy)
        return (a, b, {
            a.stop()
            b.stop()
            first.removeDataDir()
            try? FileManager.default.removeItem(atPath: copy)
            try? FileManager.default.removeItem(atPath: copy + ".log")
        })
    }

    func compare(_ steps: [Step]) throws {
        let (a, b, cleanUp) = try Self.twins()
        defer { cleanUp() }
        let etcdctl = ProcessInfo.processInfo.environment["SWETCD_ETCDCTL"] ?? "/usr/bin/etcdctl"
        let theirs = try Self.transcript(etcdctl, a.endpoint, steps)
        let ours = try Self.transcript(Self.swetcdctl, b.endpoint, steps)
        for (o, t) in zip(ours, theirs) { #expect(o == t, "swetcdctl:\n\(o)\netcdctl:\n\(t)") }
    }

    /// Watches left running on both members while the same writes are
    /// made to each: the same lines, in the same order.
    @Test func watchesPrintTheSameEvents() throws {
        let (a, b, cleanUp) = try Self.twins()
        defer { cleanUp() }
        let etcdctl = ProcessInfo.processInfo.environment["SWETCD_ETCDCTL"] ?? "/usr/bin/etcdctl"
        let watches: [([String], String?, [String: String])] = [
            (["watch", "/w/", "--prefix", "--prev-kv"], nil, [:]),
            (["watch", "/w/", "--prefix", "-w", "json"], nil, [:]),
            (["watch", "/w/", "--prefix", "-w", "fields", "--hex"], nil, [:]),
            (["watch", "/w/a", "/w/c"], nil, [:]),
            (["watch", "/w/a", "--", "sh", "-c", "echo exec $ETCD_WATCH_EVENT_TYPE $ETCD_WATCH_KEY $ETCD_WATCH_VALUE"], nil, [:]),
            (["watch"], nil, ["ETCDCTL_WATCH_KEY": "/w/b"]),
            (["watch", "-i"], "watch /w/a\nnonsense\nwatch --prefix /w/b --prev-kv\nwatch\n", [:]),
        ]
        func start(_ binary: String, _ endpoint: String) throws -> [(ChildProcess, String)] {
            try watches.map { arguments, input, environment in
                let output = FileManager.default.temporaryDirectory.appendingPathComponent("watch-\(UUID().uuidString)").path
                // Standard error apart: how two streams interleave in one
                // file depends on buffering, not on what was printed.
                let p = try ChildProcess(binary, ["--endpoints=\(endpoint)"] + arguments,
                                         environment: environment.merging(["ETCDCTL_API": "3"]) { $1 },
                                         stdin: .pipe, stdout: .file(output), stderr: .file(output + ".err"))
                if let input { p.write(input) }  // kept open: -i reads on
                return (p, output)
            }
        }
        let theirs = try start(etcdctl, a.endpoint), ours = try start(Self.swetcdctl, b.endpoint)
        usleep(1_500_000)  // every watch created
        for endpoint in [a.endpoint, b.endpoint] {
            for step in [["put", "/w/a", "1"], ["put", "/w/a", "2"], ["put", "/w/b", "x"], ["del", "/w/a"], ["put", "/w/c", "3"]] {
                _ = try runCommand(etcdctl, ["--endpoints=\(endpoint)"] + step, environment: ["ETCDCTL_API": "3"])
            }
            _ = try runCommand(etcdctl, ["--endpoints=\(endpoint)", "txn"], environment: ["ETCDCTL_API": "3"],
                               input: "\nput /w/b y\ndel /w/c\n\n\n")
        }
        usleep(1_500_000)  // every event delivered and run
        for (p, _) in theirs + ours { p.signal(SIGTERM) }
        for (p, _) in theirs + ours { p.waitUntilExit() }
        for (i, (t, o)) in zip(theirs, ours).enumerated() {
            let text = { (path: String) in
                (try? String(contentsOfFile: path, encoding: .utf8)).map { Self.mask($0, lease: "", endpoint: "") } ?? ""
            }
            #expect(text(o.1) == text(t.1), "\(watches[i].0)")
            #expect(text(o.1 + ".err") == text(t.1 + ".err"), "\(watches[i].0), standard error")
            #expect(!text(t.1).isEmpty, "\(watches[i].0) printed nothing")
            for path in [t.1, o.1, t.1 + ".err", o.1 + ".err"] { try? FileManager.default.removeItem(atPath: path) }
        }
    }

    @Test func keysAndTransactions() throws { try compare(Self.kv) }
    @Test func leasesClusterAndMaintenance() throws { try compare(Self.leasesAndCluster) }
    @Test func usersRolesAndAuth() throws { try compare(Self.auth) }
}
