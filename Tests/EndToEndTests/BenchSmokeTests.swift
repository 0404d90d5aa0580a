import Foundation
import Testing

/// A few hundred requests of each swetcd-bench workload, so the load
/// generator cannot rot. (The real comparison is benchmarks/compare.)
@Suite struct BenchSmokeTests {
    static let packageRoot = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The debug build of swetcd-bench, built first if CI has not already.
    static func benchExecutable() throws -> String {
        let path = packageRoot.appendingPathComponent("benchmarks/.build/debug/swetcd-bench").path
        if !FileManager.default.isExecutableFile(atPath: path) {
            guard let swift = which("swift") else { throw E2EError("swift not found") }
            let r = try runCommand(swift, ["build", "--package-path", packageRoot.appendingPathComponent("benchmarks").path,
                                           "--product", "swetcd-bench"], timeout: 1200)
            guard r.status == 0 else { throw E2EError("building swetcd-bench failed:\n\(r.stderr)\n\(r.stdout)") }
        }
        return path
    }

    func report(_ r: CommandResult) throws -> [String: Any] {
        guard r.status == 0, let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
            throw E2EError("swetcd-bench failed: \(r)")
        }
        return json
    }

    @Test func everyWorkloadRunsAndReports() throws {
        let bench = try Self.benchExecutable()
        let server = try ServerProcess()
        defer { server.stop() }
        let common = ["--endpoints", server.endpoint, "--clients", "4", "--conns", "2", "--json"]
        let put = try report(runCommand(bench, ["put", "--total", "300", "--val-size", "64", "--key-space-size", "50"] + common))
        #expect(put["requests"] as? Int == 300)
        #expect((put["errors"] as? [String: Int])?.isEmpty == true)
        #expect((put["requestsPerSecond"] as? Double ?? 0) > 0)
        #expect((put["latencyMs"] as? [String: Double])?["p99"] != nil)
        for workload in [["range", "00000001", "--consistency", "s"], ["txn-put", "--txn-ops", "2"], ["txn-mixed"]] {
            let r = try report(runCommand(bench, workload + ["--total", "200"] + common))
            #expect(r["requests"] as? Int == 200, "\(workload)")
            #expect((r["errors"] as? [String: Int])?.isEmpty == true, "\(workload): \(r)")
        }
        let watch = try report(runCommand(bench, ["watch", "--streams", "2", "--watchers-per-stream", "3", "--put-total", "20",
                                                  "--put-rate", "200", "--endpoints", server.endpoint, "--json"]))
        #expect(watch["requests"] as? Int == 2 * 3 * 20, "every watcher got every event: \(watch)")
        #expect((watch["errors"] as? [String: Int])?.isEmpty == true, "\(watch)")
        let status = try Etcdctl(endpoint: server.endpoint).run("get", "00", "--prefix", "--keys-only")
        #expect(status.lines.count <= 50 && status.lines.count > 0, "puts landed in the key space")
    }
}
