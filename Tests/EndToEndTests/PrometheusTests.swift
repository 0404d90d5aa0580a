import Foundation
import Testing
import TestSupport

/// A real Prometheus (Debian's) scrapes a three-member swetcd cluster with
/// etcd's alerting rules loaded (docs/monitoring/etcd-alerts.yml): every
/// alert's query and every dashboard panel's query returns data, a
/// healthy cluster's fsync and commit alerts stay inactive, and with
/// quorum lost the survivor's no-leader expression turns true within two
/// scrapes of the member reporting it.
@Suite(.serialized) struct PrometheusTests {
    static let monitoring = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("docs/monitoring")

    /// Debian's prometheus on a free port, scraping `targets` every second.
    final class Prometheus {
        let child: ChildProcess
        let port: UInt16
        let dir: String
        let curl: String

        init(targets: [String], rules: String) throws {
            curl = try #require(which("curl"))
            port = try ReferenceEtcd.freePort()
            dir = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-prometheus-\(UUID().uuidString)").path
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            let config = """
                global:
                  scrape_interval: 1s
                  evaluation_interval: 1s
                rule_files: ["\(rules)"]
                scrape_configs:
                  - job_name: etcd
                    static_configs:
                      - targets: [\(targets.map { "\"\($0)\"" }.joined(separator: ", "))]
                """
            try config.write(toFile: dir + "/prometheus.yml", atomically: true, encoding: .utf8)
            child = try ChildProcess("/usr/bin/prometheus", [
                "--config.file=\(dir)/prometheus.yml", "--storage.tsdb.path=\(dir)/data",
                "--web.listen-address=127.0.0.1:\(port)",
            ], stdout: .file(dir + "/log"), stderr: .standardOutput)
            let deadline = Date().addingTimeInterval(30)
            while Date() < deadline {
                let ready = try runCommand(curl, ["-s", "-o", "/dev/null", "-w", "%{http_code}", "http://127.0.0.1:\(port)/-/ready"])
                if ready.stdout == "200" { return }
                usleep(100_000)
            }
            let log = (try? String(contentsOfFile: dir + "/log", encoding: .utf8)) ?? ""
            stop()
            throw E2EError("prometheus did not become ready in 30 s:\n\(log.suffix(3000))")
        }

        /// An API answer's `data`.
        func api(_ path: String, query: String? = nil) throws -> Any? {
            var args = ["-s", "-G", "http://127.0.0.1:\(port)/api/v1/\(path)"]
            if let query { args += ["--data-urlencode", "query=\(query)"] }
            let out = try runCommand(curl, args).stdout
            guard let json = try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any],
                  json["status"] as? String == "success" else { throw E2EError("prometheus \(path) \(query ?? ""): \(out)") }
            return json["data"]
        }

        /// An instant query's result series.
        func query(_ q: String) throws -> [[String: Any]] {
            ((try api("query", query: q) as? [String: Any])?["result"] as? [[String: Any]]) ?? []
        }

        /// Every loaded rule, as the rules API describes it.
        func rules() throws -> [[String: Any]] {
            let groups = (try api("rules") as? [String: Any])?["groups"] as? [[String: Any]] ?? []
            return groups.flatMap { $0["rules"] as? [[String: Any]] ?? [] }
        }

        func stop() {
            _ = child.terminate()
            try? FileManager.default.removeItem(atPath: dir)
        }
    }

    static func lines(_ file: String) throws -> [String] {
        try String(contentsOf: monitoring.appendingPathComponent(file), encoding: .utf8)
            .split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") && !$0.isEmpty }
    }

    @Test func etcdsAlertsAndDashboardSeeTheClusterAndItsLostQuorum() throws {
        let queries = try Self.lines("alert-queries.txt") + Self.lines("dashboard-queries.txt")
        #expect(queries.count == 13 + 19)
        let cluster = try ClusterTests.Cluster(extraFlags: ["--metrics=extensive"])
        defer { cluster.stop() }
        _ = try cluster.leader()
        let targets = cluster.members.map { $0!.endpoint }
        let prometheus = try Prometheus(targets: targets, rules: Self.monitoring.appendingPathComponent("etcd-alerts.yml").path)
        defer { prometheus.stop() }

        // A small load on every member: puts, reads, a lease, a watch.
        let watch = try BackgroundEtcdctl(endpoint: targets[0], ["watch", "--prefix", "load/"])
        defer { _ = watch.finish(expectingLines: 0) }
        for i in 0..<12 {
            let etcdctl = cluster.etcdctl(i % 3)
            try etcdctl.run("put", "load/\(i)", "v\(i)")
            try etcdctl.run("get", "load/", "--prefix", "--keys-only")
            if i == 0 { try etcdctl.run("lease", "grant", "30") }
        }

        // Every query returns data once a few scrapes (and a peer probe,
        // every 5 s) are in.
        var empty: [String] = queries
        let deadline = Date().addingTimeInterval(30)
        while !empty.isEmpty && Date() < deadline {
            empty = try empty.filter { try prometheus.query($0).isEmpty }
            if !empty.isEmpty { usleep(500_000) }
        }
        #expect(empty.isEmpty, "no data for:\n\(empty.joined(separator: "\n"))")
        // And every series any of them names exists (an expression can
        // return data from another branch of an `or`).
        let names = Set(queries.flatMap { q in
            q.split(whereSeparator: { !($0.isLetter || $0.isNumber || $0 == "_") })
                .filter { $0.hasPrefix("etcd_") || $0.hasPrefix("grpc_") || $0.hasPrefix("process_") }.map(String.init)
        }).subtracting(["grpc_code", "grpc_method", "grpc_service", "grpc_type"])  // labels
        #expect(names.count >= 20)
        for name in names.sorted() {
            #expect(try !prometheus.query("\(name){job=\"etcd\"}").isEmpty, "no series \(name)")
        }

        // A cluster member's scrape (peer series included) passes
        // Prometheus's own checker.
        let scrape = try runCommand(prometheus.curl, ["-s", "http://\(targets[1])/metrics"]).stdout
        #expect(scrape.contains("etcd_network_peer_round_trip_time_seconds_bucket{To="))
        let check = try runCommand("/usr/bin/promtool", ["check", "metrics"], input: scrape)
        #expect(check.status == 0, "promtool: \(check.stdout)\(check.stderr)")
        // etcd's round-trip buckets (ExponentialBuckets(0.0001, 2, 16)), as
        // Prometheus stored them.
        let rtt = try prometheus.query("etcd_network_peer_round_trip_time_seconds_bucket{job=\"etcd\"}")
        let bounds = Set(rtt.compactMap { ($0["metric"] as? [String: String])?["le"] })
        #expect(bounds == Set((0..<16).map { String(format: "%g", 0.0001 * Double(1 << $0)) } + ["+Inf"]), "\(bounds.sorted())")
        // Every rule evaluates without error; the healthy cluster's fsync
        // and commit alerts are not pending or firing.
        var rules: [[String: Any]] = []
        for _ in 0..<40 {
            rules = try prometheus.rules()
            if rules.count == 13 && rules.allSatisfy({ ($0["lastEvaluation"] as? String ?? "").hasPrefix("0001") == false }) { break }
            usleep(250_000)
        }
        #expect(rules.count == 13)
        for rule in rules {
            let name = rule["name"] as? String ?? "?"
            #expect(rule["health"] as? String == "ok", "\(name): \(rule["lastError"] ?? "")")
            if name == "etcdHighFsyncDurations" || name == "etcdHighCommitDurations" || name == "etcdNoLeader" {
                #expect(rule["state"] as? String == "inactive", "\(name) is \(rule["state"] ?? "?") on a healthy cluster")
            }
        }

        // Quorum lost: two of three members stop. Once the survivor reports
        // no leader itself, Prometheus has it within two scrapes.
        let survivor = 0
        let instance = targets[survivor]
        for i in 1..<3 {
            cluster.members[i]?.stop()
            cluster.members[i] = nil
        }
        let curl = try #require(which("curl"))
        var reported: Double?
        for _ in 0..<300 where reported == nil {
            let text = try runCommand(curl, ["-s", "http://\(instance)/metrics"]).stdout
            if text.contains("\netcd_server_has_leader 0\n") { reported = Date().timeIntervalSince1970 } else { usleep(20_000) }
        }
        let seenAt = try #require(reported, "the survivor never reported etcd_server_has_leader 0")
        var fired = false
        for _ in 0..<100 where !fired {
            fired = try prometheus.query("etcd_server_has_leader{job=\"etcd\"} == 0")
                .contains { ($0["metric"] as? [String: String])?["instance"] == instance }
            if !fired { usleep(100_000) }
        }
        #expect(fired, "etcd_server_has_leader == 0 never held for \(instance)")
        // The survivor's samples around then, by scrape: the first 0 is in
        // at most the second scrape taken after the member said so.
        let samples = try prometheus.query("etcd_server_has_leader{instance=\"\(instance)\"}[60s]").first?["values"] as? [[Any]] ?? []
        let points = samples.compactMap { v -> (time: Double, value: String)? in
            guard v.count == 2, let t = v[0] as? Double, let s = v[1] as? String else { return nil }
            return (t, s)
        }
        let firstZero = try #require(points.firstIndex { $0.value == "0" }, "no 0 sample in \(points)")
        let firstAfter = points.firstIndex { $0.time >= seenAt } ?? points.count
        #expect(firstZero <= firstAfter + 1, "first 0 at scrape \(firstZero), the member said so before scrape \(firstAfter): \(points)")
    }
}
