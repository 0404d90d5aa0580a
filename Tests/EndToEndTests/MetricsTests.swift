import Foundation
import Testing

/// /metrics as Prometheus and etcd's operators read it: etcd's names and
/// types, counts that follow what clients did, etcd's histogram buckets,
/// and a scrape `promtool check metrics` accepts.
@Suite struct MetricsEndpointTests {
    /// The families an etcd operator's alerts and dashboards use (issue 23's
    /// list), with etcd's types, but for those named `_total` that etcd
    /// declares gauges: counters here, as promtool requires.
    static let families: [(String, String)] = [
        ("etcd_server_has_leader", "gauge"), ("etcd_server_is_leader", "gauge"),
        ("etcd_server_leader_changes_seen_total", "counter"), ("etcd_server_proposals_committed_total", "counter"),
        ("etcd_server_proposals_applied_total", "counter"), ("etcd_server_proposals_pending", "gauge"),
        ("etcd_server_proposals_failed_total", "counter"), ("etcd_server_slow_apply_total", "counter"),
        ("etcd_server_slow_read_indexes_total", "counter"), ("etcd_server_heartbeat_send_failures_total", "counter"),
        ("etcd_server_quota_backend_bytes", "gauge"), ("etcd_server_version", "gauge"), ("etcd_cluster_version", "gauge"),
        ("etcd_server_id", "gauge"), ("etcd_disk_wal_fsync_duration_seconds", "histogram"),
        ("etcd_disk_backend_commit_duration_seconds", "histogram"), ("etcd_disk_backend_defrag_duration_seconds", "histogram"),
        ("etcd_disk_backend_snapshot_duration_seconds", "histogram"), ("etcd_mvcc_db_total_size_in_bytes", "gauge"),
        ("etcd_mvcc_db_total_size_in_use_in_bytes", "gauge"), ("etcd_mvcc_put_total", "counter"),
        ("etcd_mvcc_delete_total", "counter"), ("etcd_mvcc_range_total", "counter"), ("etcd_mvcc_txn_total", "counter"),
        ("etcd_debugging_mvcc_keys_total", "counter"), ("etcd_debugging_mvcc_watcher_total", "counter"),
        ("etcd_debugging_mvcc_slow_watcher_total", "counter"), ("etcd_debugging_mvcc_events_total", "counter"),
        ("etcd_debugging_lease_granted_total", "counter"), ("etcd_debugging_lease_revoked_total", "counter"),
        ("etcd_network_client_grpc_sent_bytes_total", "counter"), ("etcd_network_client_grpc_received_bytes_total", "counter"),
        ("grpc_server_started_total", "counter"), ("grpc_server_handled_total", "counter"),
        ("grpc_server_msg_received_total", "counter"), ("grpc_server_msg_sent_total", "counter"),
        ("process_cpu_seconds_total", "counter"), ("process_resident_memory_bytes", "gauge"),
        ("process_virtual_memory_bytes", "gauge"), ("process_virtual_memory_max_bytes", "gauge"),
        ("process_open_fds", "gauge"), ("process_max_fds", "gauge"), ("process_start_time_seconds", "gauge"),
    ]

    /// etcd's `le` bounds: ExponentialBuckets(0.001, 2, 14) for the WAL
    /// fsync and backend commit.
    static let diskBuckets = ["0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512",
                              "1.024", "2.048", "4.096", "8.192", "+Inf"]

    @Test func countsWhatClientsDidInEtcdsNamesAndBuckets() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let etcdctl = Etcdctl(endpoint: server.endpoint)
        let curl = try #require(which("curl"))
        let promtool = "/usr/bin/promtool"
        let before = Scrape(try runCommand(curl, ["-s", "http://\(server.endpoint)/metrics"]).stdout)

        // A watcher, then writes it sees: 2 puts, a txn of 2 puts, a delete.
        let watch = try BackgroundEtcdctl(endpoint: server.endpoint, ["watch", "--prefix", "m/"])
        var watching = false
        for _ in 0..<100 where !watching {
            let scrape = Scrape(try runCommand(curl, ["-s", "http://\(server.endpoint)/metrics"]).stdout)
            watching = scrape.value("etcd_debugging_mvcc_watcher_total") == 1
            if !watching { usleep(50_000) }
        }
        #expect(watching, "the watch was not created")
        try etcdctl.run("put", "m/a", "1")
        try etcdctl.run("put", "m/b", "2")
        let txn = try etcdctl.run("txn", input: "value(\"m/a\") = \"1\"\n\nput m/c 3\nput m/d 4\n\n\n")
        #expect(txn.stdout.hasPrefix("SUCCESS"), "\(txn)")
        try etcdctl.run("del", "m/b")
        #expect(try etcdctl.run("get", "m/", "--prefix", "--keys-only").lines == ["m/a", "m/c", "m/d"])
        let grant = try etcdctl.run("lease", "grant", "60")
        let leaseID = try #require(grant.stdout.split(separator: " ").dropFirst().first.map(String.init), "\(grant)")
        try etcdctl.run("lease", "revoke", leaseID)
        // PUT, key, value per put; DELETE, key per delete.
        for _ in 0..<200 where watch.text.split(separator: "\n").count < 14 { usleep(25_000) }
        defer { _ = watch.finish(expectingLines: 14) }

        let text = try runCommand(curl, ["-s", "http://\(server.endpoint)/metrics"]).stdout
        let after = Scrape(text)
        for (name, type) in Self.families {
            #expect(after.types[name] == type, "\(name): \(after.types[name] ?? "missing")")
        }
        func delta(_ name: String, _ labels: [String: String] = [:]) -> Double {
            (after.value(name, labels) ?? 0) - (before.value(name, labels) ?? 0)
        }
        // etcd's transaction wrapper: the txn's compare is no range; a
        // transaction counts when it held more than one operation.
        #expect(delta("etcd_mvcc_put_total") == 4)
        #expect(delta("etcd_mvcc_delete_total") == 1)
        #expect(delta("etcd_mvcc_txn_total") == 1)
        #expect(delta("etcd_mvcc_range_total") == 1)
        #expect(after.value("etcd_debugging_mvcc_keys_total") == 3)
        #expect(delta("etcd_debugging_lease_granted_total") == 1 && delta("etcd_debugging_lease_revoked_total") == 1)
        #expect(after.value("etcd_debugging_mvcc_watcher_total") == 1)
        #expect(delta("etcd_debugging_mvcc_events_total") == 5)
        let put = ["grpc_method": "Put", "grpc_service": "etcdserverpb.KV", "grpc_type": "unary"]
        #expect(delta("grpc_server_started_total", put) == 2)
        #expect(delta("grpc_server_handled_total", put.merging(["grpc_code": "OK"]) { a, _ in a }) == 2)
        #expect(delta("grpc_server_msg_received_total", put) == 2 && delta("grpc_server_msg_sent_total", put) == 2)
        // Every method has every code from the start (grpc_prometheus.Register).
        #expect(after.value("grpc_server_handled_total", put.merging(["grpc_code": "Unavailable"]) { a, _ in a }) == 0)
        let watchCall = ["grpc_method": "Watch", "grpc_service": "etcdserverpb.Watch", "grpc_type": "bidi_stream"]
        #expect(delta("grpc_server_msg_received_total", watchCall) == 1, "the watch's create request")
        #expect(delta("grpc_server_msg_sent_total", watchCall) == 5, "created, then four responses (the txn's two events in one)")
        #expect(delta("etcd_network_client_grpc_received_bytes_total") > 0 && delta("etcd_network_client_grpc_sent_bytes_total") > 0)
        #expect(after.value("etcd_server_has_leader") == 1 && after.value("etcd_server_is_leader") == 1)
        #expect(after.labels("etcd_server_version").first?["server_version"] == "3.5.0")
        #expect(after.labels("etcd_server_id").first?["server_id"]?.isEmpty == false)
        // The WAL synced each write; the backend commits in batches.
        #expect(delta("etcd_disk_wal_fsync_duration_seconds_count") >= 6)
        for histogram in ["etcd_disk_wal_fsync_duration_seconds", "etcd_disk_backend_commit_duration_seconds"] {
            #expect(after.labels(histogram + "_bucket").compactMap { $0["le"] } == Self.diskBuckets, "\(histogram)")
        }
        #expect(after.value("process_open_fds")! > 5 && after.value("process_resident_memory_bytes")! > 1e6)
        #expect(abs(after.value("process_start_time_seconds")! - Date().timeIntervalSince1970) < 600)

        let check = try runCommand(promtool, ["check", "metrics"], input: text)
        #expect(check.status == 0, "promtool: \(check.stdout)\(check.stderr)")
    }

    /// --metrics extensive: grpc-go's handling-time histogram per method,
    /// with client_golang's default buckets; basic has none.
    @Test func extensiveMetricsTimeEachCall() throws {
        let curl = try #require(which("curl"))
        for extensive in [false, true] {
            let server = try ServerProcess(arguments: extensive ? ["--metrics=extensive"] : [])
            defer { server.stop() }
            try Etcdctl(endpoint: server.endpoint).run("put", "k", "v")
            let text = try runCommand(curl, ["-s", "http://\(server.endpoint)/metrics"]).stdout
            let scrape = Scrape(text)
            let put = ["grpc_method": "Put", "grpc_service": "etcdserverpb.KV", "grpc_type": "unary"]
            if extensive {
                #expect(scrape.types["grpc_server_handling_seconds"] == "histogram")
                #expect(scrape.value("grpc_server_handling_seconds_count", put) == 1)
                #expect(scrape.samples.filter { $0.name == "grpc_server_handling_seconds_bucket" && $0.labels["grpc_method"] == "Put" }
                            .compactMap { $0.labels["le"] } == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"])
                let check = try runCommand("/usr/bin/promtool", ["check", "metrics"], input: text)
                #expect(check.status == 0, "promtool: \(check.stdout)\(check.stderr)")
            } else {
                #expect(scrape.types["grpc_server_handling_seconds"] == nil)
            }
        }
    }
}

/// One scrape, parsed: each family's type and each sample.
struct Scrape {
    var types: [String: String] = [:]
    var samples: [(name: String, labels: [String: String], value: Double)] = []

    init(_ text: String) {
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                if parts.count == 4 { types[String(parts[2])] = String(parts[3]) }
                continue
            }
            if line.hasPrefix("#") { continue }
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) ?? Self.special(line[line.index(after: space)...]) else { continue }
            let series = line[..<space]
            var labels: [String: String] = [:]
            var name = String(series)
            if let brace = series.firstIndex(of: "{") {
                name = String(series[..<brace])
                // Label values here hold no quotes or commas.
                for pair in series[series.index(after: brace)..<series.index(before: series.endIndex)].split(separator: ",") {
                    let kv = pair.split(separator: "=", maxSplits: 1)
                    if kv.count == 2 { labels[String(kv[0])] = String(kv[1].dropFirst().dropLast()) }
                }
            }
            samples.append((name, labels, value))
        }
    }

    private static func special(_ s: Substring) -> Double? {
        switch s {
        case "+Inf": .infinity
        case "-Inf": -.infinity
        default: nil
        }
    }

    /// The sample of `name` whose labels include `labels`.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { s in s.name == name && labels.allSatisfy { k, v in s.labels[k] == v } }?.value
    }

    func labels(_ name: String) -> [[String: String]] { samples.filter { $0.name == name }.map(\.labels) }
}

/// The log lines operators grep etcd's logs for, with etcd's messages and
/// fields, written to every --log-outputs target.
@Suite struct OperatorLogTests {
    @Test func etcdsMessagesGoToEveryOutput() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-log-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let server = try ServerProcess(arguments: ["--log-outputs=stderr,\(file)", "--logger=zap"])
        defer { server.stop() }
        let etcdctl = Etcdctl(endpoint: server.endpoint)
        for i in 0..<3 { try etcdctl.run("put", "k", "v\(i)") }
        #expect(try etcdctl.run("compact", "3", "--physical").status == 0)
        #expect(try etcdctl.run("defrag").status == 0)
        let snapshot = file + ".db"
        defer { try? FileManager.default.removeItem(atPath: snapshot) }
        #expect(try etcdctl.run("snapshot", "save", snapshot).status == 0)
        var lines: [[String: String]] = []
        for _ in 0..<50 {
            let text = (try? String(contentsOfFile: file, encoding: .utf8)) ?? ""
            lines = text.split(separator: "\n").compactMap {
                try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: String]
            }
            if lines.contains(where: { $0["msg"] == "sent database snapshot to client" }) { break }
            usleep(100_000)
        }
        func line(_ msg: String) -> [String: String]? { lines.first { $0["msg"] == msg } }
        #expect(lines.allSatisfy { $0["level"] != nil && $0["ts"] != nil }, "every line is etcd's JSON")
        #expect(lines.contains { ($0["msg"] ?? "").range(of: #"^raft\.node: [0-9a-f]+ elected leader [0-9a-f]+ at term [0-9]+$"#, options: .regularExpression) != nil })
        #expect(line("compact tree index")?["revision"] == "3")
        #expect(line("finished scheduled compaction")?["compact-revision"] == "3")
        #expect(line("finished scheduled compaction")?["took"] != nil)
        #expect(line("defragmenting")?["current-db-size-bytes"] != nil)
        #expect(line("finished defragmenting directory")?["took"] != nil)
        #expect(line("sending database snapshot to client")?["total-bytes"] != nil)
        #expect(line("sent database snapshot to client")?["bytes"] == line("sending database snapshot to client")?["total-bytes"])
        // The same lines on standard error (what ServerProcess keeps).
        let stderrLines = server.log.split(separator: "\n").filter { $0.hasPrefix("{") }
        #expect(stderrLines.count >= lines.count && lines.count > 5)
    }

    @Test func badLogFlagsAreRefused() throws {
        let swetcd = ServerProcess.executable
        for flags in [["--logger=capnslog"], ["--log-outputs=default,stdout"], ["--log-outputs=/nonexistent-dir/x.log"]] {
            let r = try runCommand(swetcd, flags + ["--data-dir", "/tmp/swetcd-unused-\(UUID().uuidString)"], timeout: 20)
            #expect(r.status != 0, "\(flags): \(r)")
        }
    }
}
