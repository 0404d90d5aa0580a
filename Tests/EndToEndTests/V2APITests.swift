import Foundation
import Testing
import TestSupport

/// The v2 API (`--enable-v2`) against a real etcd 3.4 with the same flag:
/// curl sees the same statuses, headers and bodies; `ETCDCTL_API=2
/// etcdctl` prints the same; python-etcd sees the same; and the v2 data
/// survives kill -9. Indexes differ by design (etcd spends some on its
/// own membership records), so they are masked.
@Suite struct V2APITests {
    /// (method, path, form body).
    static let requests: [(String, String, String?)] = [
        ("PUT", "/v2/keys/foo", "value=bar"),
        ("GET", "/v2/keys/foo", nil),
        ("PUT", "/v2/keys/foo", "value=bar2"),
        ("PUT", "/v2/keys/dir/a/b", "value=1&ttl=100"),
        ("GET", "/v2/keys/dir?recursive=true&sorted=true", nil),
        ("GET", "/v2/keys/dir", nil),
        ("GET", "/v2/keys/?sorted=true", nil),
        ("GET", "/v2/keys/nope", nil),
        ("PUT", "/v2/keys/foo", "value=x&prevValue=zz"),
        ("PUT", "/v2/keys/foo", "value=x&prevExist=false"),
        ("PUT", "/v2/keys/foo?prevExist=true", "value=updated"),
        ("PUT", "/v2/keys/foo?prevValue=updated", "value=swapped"),
        ("PUT", "/v2/keys/gone?prevExist=true", "value=x"),
        ("PUT", "/v2/keys/dir", "value=x"),
        ("DELETE", "/v2/keys/dir", nil),
        ("PUT", "/v2/keys/dir/a/b/c", "value=x"),
        ("DELETE", "/v2/keys/", nil),
        ("POST", "/v2/keys/queue", "value=job1"),
        ("POST", "/v2/keys/queue", "value=job2"),
        ("GET", "/v2/keys/queue?sorted=true", nil),
        ("PUT", "/v2/keys/e?dir=true", nil),
        ("PUT", "/v2/keys/e?dir=true&prevExist=false", nil),
        ("PUT", "/v2/keys/e/child", "value=1"),
        ("DELETE", "/v2/keys/e?dir=true", nil),
        ("DELETE", "/v2/keys/e?recursive=true", nil),
        ("DELETE", "/v2/keys/foo?prevValue=nope", nil),
        ("DELETE", "/v2/keys/foo?prevValue=swapped", nil),
        ("PUT", "/v2/keys/_hidden", "value=h"),
        ("GET", "/v2/keys/_hidden", nil),
        ("PUT", "/v2/keys/file", "value=<a&b>"),
        ("GET", "/v2/keys/file", nil),
        ("PUT", "/v2/keys/file?noValueOnSuccess=true", "value=c"),
        ("PUT", "/v2/keys/sp%20ace", "value=a+b%21"),
        ("GET", "/v2/keys/sp%20ace", nil),
        ("PUT", "/v2/keys/file", "dir=true"),
        ("GET", "/v2/keys/?recursive=true&sorted=true", nil),
        // Watches that find their change in the history at once.
        ("GET", "/v2/keys/queue?wait=true&waitIndex=1&recursive=true", nil),
        ("GET", "/v2/keys/sp%20ace?wait=true&waitIndex=1", nil),
        // Bad input.
        ("PUT", "/v2/keys/x?ttl=abc", "value=1"),
        ("PUT", "/v2/keys/x?wait=true", "value=1"),
        ("PUT", "/v2/keys/x", "prevValue="),
        ("PUT", "/v2/keys/x?refresh=true", "value=1"),
        ("PUT", "/v2/keys/x?refresh=true", nil),
        ("GET", "/v2/keys/x?recursive=maybe", nil),
        ("GET", "/v2/keys/x?waitIndex=-1", nil),
        ("GET", "/v2/keys/x?a=%zz", nil),
        ("GET", "/v2/keys/x%zz", nil),
        ("PATCH", "/v2/keys/x", nil),
        ("GET", "/v2/members/leader", nil),
        ("GET", "/v2/stats/leader", nil),
        ("GET", "/v2/nothing", nil),
    ]

    /// etcd's v2 headers a response carries (names only).
    static let v2Headers = ["x-etcd-index", "x-raft-index", "x-raft-term", "x-etcd-cluster-id"]

    static func transcript(_ endpoint: String) throws -> [String] {
        let curl = try #require(which("curl"))
        return try requests.map { method, path, body in
            var arguments = ["-s", "-D", "-", "-X", method, "http://\(endpoint)\(path)"]
            if let body { arguments += ["-d", body] }
            let r = try runCommand(curl, arguments)
            let text = r.stdout.replacingOccurrences(of: "\r\n", with: "\n")
            let (head, answer) = text.range(of: "\n\n").map { (text[..<$0.lowerBound], text[$0.upperBound...]) } ?? (text[...], ""[...])
            let status = head.split(separator: "\n").first.map(String.init) ?? ""
            let headers = head.split(separator: "\n").compactMap { line in
                Self.v2Headers.first { line.lowercased().hasPrefix($0 + ":") }
            }.sorted()
            return "\(method) \(path) \(body ?? "") -> \(status) \(headers)\n" + mask(String(answer))
        }
    }

    static func mask(_ s: String) -> String {
        s.replacingOccurrences(of: #""(modifiedIndex|createdIndex|index)":\d+"#, with: #""$1":N"#, options: .regularExpression)
            .replacingOccurrences(of: #"/\d{20}"#, with: "/SEQ", options: .regularExpression)
            .replacingOccurrences(of: #""expiration":"[^"]+""#, with: #""expiration":"T""#, options: .regularExpression)
            // Seconds left of 100, which slow moments between requests
            // change (a sanitized build takes seconds); a wrong unit would not.
            .replacingOccurrences(of: #""ttl":(9\d|100)\b"#, with: #""ttl":100"#, options: .regularExpression)
            .replacingOccurrences(of: #""(id|leader)":"[0-9a-f]+""#, with: #""$1":"ID""#, options: .regularExpression)
            .replacingOccurrences(of: #""(peerURLs|clientURLs)":\[[^\]]*\]"#, with: #""$1":[U]"#, options: .regularExpression)
    }

    @Test func keysAnswerAsEtcds() throws {
        let server = try ServerProcess(arguments: ["--enable-v2"])
        defer { server.stop() }
        let reference = try ReferenceEtcd(arguments: ["--enable-v2"])
        defer { reference.stop() }
        let ours = try Self.transcript(server.endpoint), theirs = try Self.transcript(reference.endpoint)
        for (o, t) in zip(ours, theirs) {
            #expect(o == t, "swetcd:\n\(o)\netcd:\n\(t)")
        }
        #expect(ours.filter { $0.contains(" 201 Created ") }.count == 9, "both answered, creations included")
        // The server keeps serving after the bad requests.
        #expect(try runCommand(which("curl")!, ["-s", "http://\(server.endpoint)/v2/keys/file"]).stdout.contains("\"dir\":true"))
    }

    /// A long poll answers with the next change under its key, and only
    /// then; `stream=true` keeps answering.
    @Test func longPollsWaitForTheirChange() throws {
        let server = try ServerProcess(arguments: ["--enable-v2"])
        defer { server.stop() }
        let curl = try #require(which("curl"))
        let base = "http://\(server.endpoint)/v2/keys"
        func background(_ url: String) throws -> (ChildProcess, String) {
            let output = FileManager.default.temporaryDirectory.appendingPathComponent("v2-watch-\(UUID().uuidString)").path
            return (try ChildProcess(curl, ["-s", "-N", "--max-time", "20", url], stdout: .file(output)), output)
        }
        // Both ask from the next index, so a slow start misses nothing.
        let head = try runCommand(curl, ["-s", "-D", "-", "-o", "/dev/null", "\(base)/"]).stdout
        let index = try #require(head.firstMatch(of: /X-Etcd-Index: (\d+)/).map { UInt64($0.1)! })
        let (poll, pollOut) = try background("\(base)/w?wait=true&recursive=true&waitIndex=\(index + 1)")
        let (stream, streamOut) = try background("\(base)/w?wait=true&recursive=true&stream=true&waitIndex=\(index + 1)")
        defer { for p in [poll, stream] { p.signal(SIGKILL) } }
        usleep(500_000)
        _ = try runCommand(curl, ["-s", "-X", "PUT", "\(base)/elsewhere", "-d", "value=0"])
        usleep(300_000)
        #expect(poll.isRunning, "a change elsewhere must not answer the poll")
        for v in ["1", "2", "3"] { _ = try runCommand(curl, ["-s", "-X", "PUT", "\(base)/w/k", "-d", "value=\(v)"]) }
        let deadline = Date().addingTimeInterval(10)
        while poll.isRunning && Date() < deadline { usleep(50_000) }
        #expect(!poll.isRunning, "the poll ends with its change")
        let polled = try String(contentsOfFile: pollOut, encoding: .utf8)
        #expect(polled.contains(#""key":"/w/k","value":"1""#) && !polled.contains(#""value":"2""#), "\(polled)")
        usleep(300_000)
        var streamed = ""
        while Date() < deadline {
            streamed = try String(contentsOfFile: streamOut, encoding: .utf8)
            if streamed.split(separator: "\n").count >= 3 { break }
            usleep(50_000)
        }
        #expect(streamed.split(separator: "\n").map { $0.contains(#""action":"set""#) } == [true, true, true], "\(streamed)")
        #expect(stream.isRunning, "a stream stays open")
        try? FileManager.default.removeItem(atPath: pollOut)
        try? FileManager.default.removeItem(atPath: streamOut)
    }

    static func etcdctl2(_ endpoint: String, _ arguments: [String]) throws -> CommandResult {
        try runCommand("/usr/bin/etcdctl", ["--endpoints", "http://\(endpoint)"] + arguments, environment: ["ETCDCTL_API": "2"])
    }

    /// The seed's v2 commands through Debian's etcdctl 3.4 in its v2 mode.
    static func etcdctlSession(_ endpoint: String) throws -> [String] {
        let session: [[String]] = [
            ["set", "/t/a", "hello"], ["get", "/t/a"], ["mk", "/t/a", "again"], ["mk", "/t/b", "new"],
            ["mkdir", "/t/d"], ["mkdir", "/t/d"], ["ls", "--recursive", "--sort", "/t"], ["ls", "-p", "--sort", "/t"],
            ["update", "/t/a", "changed"], ["update", "/t/zz", "v"], ["get", "/t/a"], ["rm", "/t/b"], ["rmdir", "/t/d"],
            ["get", "/t/none"], ["setdir", "/t/sd"], ["updatedir", "/t/sd", "--ttl", "100"], ["get", "/t/sd"],
            ["set", "/t/sd/x", "1"], ["rmdir", "/t/sd"], ["rm", "--recursive", "/t/sd"], ["-o", "extended", "get", "/t/a"],
            ["-o", "json", "get", "/t/a"], ["set", "/t/ttl", "v", "--ttl", "1"], ["cluster-health"], ["member", "list"],
            ["rm", "--recursive", "/t"], ["ls"],
        ]
        return try session.map { arguments in
            let r = try etcdctl2(endpoint, arguments)
            return "\(arguments.joined(separator: " ")) -> \(r.status)\n\(r.stdout)\(r.stderr)"
                .replacingOccurrences(of: #"\[\d+\]"#, with: "[N]", options: .regularExpression)
                .replacingOccurrences(of: #"(Created-Index|Modified-Index|Index): \d+"#, with: "$1: N", options: .regularExpression)
                .replacingOccurrences(of: #""(createdIndex|modifiedIndex)":\d+"#, with: #""$1":N"#, options: .regularExpression)
                .replacingOccurrences(of: #"\b[0-9a-f]{14,16}\b"#, with: "ID", options: .regularExpression)
                .replacingOccurrences(of: #"http://127\.0\.0\.1:\d+"#, with: "URL", options: .regularExpression)
                .replacingOccurrences(of: #"peerURLs=\S+"#, with: "peerURLs=P", options: .regularExpression)
        }
    }

    @Test func etcdctlV2CommandsPrintAsAgainstEtcd() throws {
        let server = try ServerProcess(arguments: ["--enable-v2"])
        defer { server.stop() }
        let reference = try ReferenceEtcd(arguments: ["--enable-v2"])
        defer { reference.stop() }
        let ours = try Self.etcdctlSession(server.endpoint), theirs = try Self.etcdctlSession(reference.endpoint)
        for (o, t) in zip(ours, theirs) { #expect(o == t, "swetcd:\n\(o)\netcd:\n\(t)") }
        #expect(ours.contains { $0.hasPrefix("cluster-health -> 0") && $0.contains("cluster is healthy") })
        #expect(ours.contains { $0.hasPrefix("get /t/a -> 0\nchanged") })

        // `watch` waits for one change and prints it; `--forever` each one.
        func watched(_ endpoint: String) throws -> String {
            // From the index after now, so a slow start misses nothing.
            let now = try Self.etcdctl2(endpoint, ["-o", "extended", "set", "/w/k", "v0"]).stdout
            let index = try #require(now.firstMatch(of: /Modified-Index: (\d+)/).map { $0.1 })
            let once = try BackgroundProcess("/usr/bin/etcdctl", ["--endpoints", "http://\(endpoint)", "watch", "--recursive",
                                                                  "--after-index", String(index), "/w"],
                                             environment: ["ETCDCTL_API": "2"])
            usleep(300_000)
            _ = try Self.etcdctl2(endpoint, ["set", "/w/k", "v1"])
            _ = try Self.etcdctl2(endpoint, ["set", "/w/k", "v2"])
            return try once.waitForExit(timeout: 10)
        }
        let (o, t) = (try watched(server.endpoint), try watched(reference.endpoint))
        #expect(o == t && o == "[set] /w/k\nv1\n", "swetcd: \(o)\netcd: \(t)")
    }

    @Test func pythonEtcdSeesWhatItSeesAgainstEtcd() throws {
        let server = try ServerProcess(arguments: ["--enable-v2"])
        defer { server.stop() }
        let reference = try ReferenceEtcd(arguments: ["--enable-v2"])
        defer { reference.stop() }
        let ours = try runPython("python_etcd_v2.py", [server.endpoint])
        let theirs = try runPython("python_etcd_v2.py", [reference.endpoint])
        #expect(ours.status == 0, "\(ours.stderr)")
        #expect(ours.stdout == theirs.stdout, "swetcd: \(ours.stdout)\netcd: \(theirs.stdout)")
        #expect(ours.stdout.contains("'expired'") && ours.stdout.contains("['woke']"), "\(ours.stdout)")
    }

    /// Acknowledged v2 writes survive kill -9: the tree, values, indexes,
    /// expiry times; a TTL runs out after the restart; the index goes on;
    /// a watcher asking for history from before the restart hears it was
    /// cleared (etcd's 401).
    @Test func v2DataSurvivesKill9() throws {
        let curl = try #require(which("curl"))
        // Every run is given the data dir, so none removes it when replaced.
        let dataDir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-v2-\(UUID().uuidString)").path
        var server = try ServerProcess(arguments: ["--enable-v2"], dataDir: dataDir)
        defer { server.stop(); server.removeDataDir() }
        func call(_ args: String...) throws -> String {
            try runCommand(curl, ["-s"] + args.map { $0.replacingOccurrences(of: "@", with: "http://\(server.endpoint)/v2/keys") }).stdout
        }
        _ = try call("-X", "PUT", "@/app/config", "-d", "value=one")
        _ = try call("-X", "PUT", "@/app/config", "-d", "value=two")
        _ = try call("-X", "PUT", "@/app/empty?dir=true")
        _ = try call("-X", "PUT", "@/app/lasting", "-d", "value=x", "-d", "ttl=1000")
        _ = try call("-X", "PUT", "@/app/brief", "-d", "value=x", "-d", "ttl=2")
        _ = try call("-X", "POST", "@/jobs", "-d", "value=j1")
        _ = try call("-X", "PUT", "@/gone/k", "-d", "value=1")
        _ = try call("-X", "DELETE", "@/gone?recursive=true")
        let long = String(repeating: "l", count: 600)
        _ = try call("-X", "PUT", "@/\(long)", "-d", "value=long path")
        let last = try call("-X", "PUT", "@/last", "-d", "value=z")
        let lastIndex = try #require(last.firstMatch(of: /"modifiedIndex":(\d+)/).map { UInt64($0.1)! })
        let tree = try call("@/?recursive=true&sorted=true")
        // A keyspace of its own: v3 sees none of it.
        try Etcdctl(endpoint: server.endpoint).run("put", "/v3-only", "1")
        let v3 = try Etcdctl(endpoint: server.endpoint).run("get", "", "--prefix", "--keys-only")
        #expect(v3.status == 0 && v3.lines == ["/v3-only"], "\(v3.stdout)")
        #expect(try call("@/v3-only").contains("\"errorCode\":100"))
        server.kill()

        server = try ServerProcess(arguments: ["--enable-v2"], dataDir: dataDir)
        #expect(try Self.withoutTTL(call("@/?recursive=true&sorted=true")) == Self.withoutTTL(tree))
        #expect(try call("@/\(long)").contains("\"value\":\"long path\""))
        // The index goes on from where it was (the 2 s key's expiry may
        // take the next one first).
        let next = try call("-X", "PUT", "@/after", "-d", "value=1")
        let nextIndex = try #require(next.firstMatch(of: /"modifiedIndex":(\d+)/).map { UInt64($0.1)! })
        #expect(nextIndex == lastIndex + 1 || nextIndex == lastIndex + 2, "\(next)")
        let cleared = try call("@/app/config?wait=true&waitIndex=1")
        #expect(cleared.contains("\"errorCode\":401"), "\(cleared)")
        // The 2-second key expires after the restart, and stays expired.
        usleep(3_200_000)
        #expect(try call("@/app/brief").contains("\"errorCode\":100"))
        #expect(try call("@/app/lasting").contains("\"value\":\"x\""))
        server.kill()
        server = try ServerProcess(arguments: ["--enable-v2"], dataDir: dataDir)
        #expect(try call("@/app/brief").contains("\"errorCode\":100"))
        let jobs = try call("@/jobs?sorted=true")
        #expect(jobs.contains("\"value\":\"j1\""), "\(jobs)")

        // A v3 snapshot holds the v2 keys too.
        let snapshot = dataDir + ".snapshot.db", restored = dataDir + ".restored"
        defer { try? FileManager.default.removeItem(atPath: snapshot); try? FileManager.default.removeItem(atPath: restored) }
        #expect(try Etcdctl(endpoint: server.endpoint).run("snapshot", "save", snapshot).status == 0)
        #expect(try runCommand(ServerProcess.executable, ["snapshot", "restore", snapshot, "--data-dir", restored]).status == 0)
        let fromSnapshot = try ServerProcess(arguments: ["--enable-v2"], dataDir: restored)
        defer { fromSnapshot.stop() }
        let config = try runCommand(curl, ["-s", "http://\(fromSnapshot.endpoint)/v2/keys/app/config"]).stdout
        #expect(config.contains("\"value\":\"two\""), "\(config)")
    }

    static func withoutTTL(_ s: String) -> String {
        s.replacingOccurrences(of: #","ttl":\d+"#, with: "", options: .regularExpression)
    }
}
