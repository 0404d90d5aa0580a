import Foundation
@testable import Metrics
import Testing
import TestSupport

@Suite struct MetricsTests {
    /// Observations from several threads against a model: a value counts in
    /// every bucket whose bound is at or above it (Prometheus's `le`).
    @Test func histogramCountsAsTheModelAcrossThreads() async {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let bounds = Histogram.exponentialBuckets(start: 0.001, factor: 2, count: 14)
        let h = Histogram(bounds: bounds)
        // Values on the bounds themselves, between them, below and above all.
        let values: [[Double]] = (0..<4).map { _ in
            (0..<2_000).map { _ in
                switch Int.random(in: 0..<3, using: &rng) {
                case 0: bounds.randomElement(using: &rng)!
                case 1: Double.random(in: 0...0.02, using: &rng)
                default: Double.random(in: 0...20, using: &rng)
                }
            }
        }
        await withTaskGroup(of: Void.self) { group in
            for chunk in values { group.addTask { for v in chunk { h.observe(seconds: v) } } }
        }
        let all = values.flatMap { $0 }
        let s = h.snapshot
        #expect(s.cumulativeCounts.count == bounds.count + 1, "seed \(seed)")
        for (i, bound) in bounds.enumerated() {
            #expect(s.cumulativeCounts[i] == all.filter { $0 <= bound }.count, "seed \(seed), le \(bound)")
        }
        #expect(s.count == all.count)
        let sum = all.reduce(0, +)
        #expect(abs(s.sum - sum) < 1e-6 * Double(all.count), "seed \(seed)")
    }

    @Test func countersAddFromManyThreads() async {
        let c = Counter()
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 { group.addTask { for _ in 0..<10_000 { c.add() } } }
        }
        c.add(5)
        #expect(c.count == 80_005)
    }

    /// etcd's histograms, as its /metrics writes their `le` labels.
    @Test func exponentialBucketsReadAsEtcds() {
        func le(_ b: [Double]) -> [String] { b.map(Exposition.number) }
        #expect(le(Histogram.exponentialBuckets(start: 0.001, factor: 2, count: 14)) ==
                ["0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512",
                 "1.024", "2.048", "4.096", "8.192"])
        #expect(le(Histogram.exponentialBuckets(start: 0.0001, factor: 2, count: 16)) ==
                ["0.0001", "0.0002", "0.0004", "0.0008", "0.0016", "0.0032", "0.0064", "0.0128", "0.0256",
                 "0.0512", "0.1024", "0.2048", "0.4096", "0.8192", "1.6384", "3.2768"])
        #expect(le(Histogram.exponentialBuckets(start: 0.1, factor: 2, count: 13)).last == "409.6")
        #expect(le(Histogram.exponentialBuckets(start: 0.01, factor: 2, count: 17)).last == "655.36")
        #expect(le(Histogram.defaultBuckets) == ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"])
    }

    @Test func numbersAndEscapes() {
        #expect(Exposition.number(3) == "3")
        #expect(Exposition.number(0.25) == "0.25")
        #expect(Exposition.number(.infinity) == "+Inf")
        #expect(Exposition.number(-.infinity) == "-Inf")
        #expect(Exposition.number(.nan) == "NaN")
        var e = Exposition()
        e.single("a_total", .counter, help: "back\\slash and\nnewline, \"quoted\"", labels: [("l", "q\"b\\n\nx")], 2)
        #expect(e.text == "# HELP a_total back\\\\slash and\\nnewline, \"quoted\"\n# TYPE a_total counter\na_total{l=\"q\\\"b\\\\n\\nx\"} 2\n")
    }

    /// A written exposition with every kind of family is what Prometheus's
    /// own checker accepts (`promtool check metrics`, installed with
    /// Debian's prometheus by scripts/install-deps.sh).
    @Test func promtoolAcceptsTheExposition() throws {
        let h = Histogram(bounds: Histogram.exponentialBuckets(start: 0.001, factor: 2, count: 14))
        for v in [0.0005, 0.003, 0.5, 30] { h.observe(seconds: v) }
        var e = Exposition()
        e.single("etcd_server_has_leader", .gauge, help: "Whether or not a leader exists. 1 is existence, 0 is not.", 1)
        e.single("etcd_server_version", .gauge, help: "Which version is running.", labels: [("server_version", "3.5.0")], 1)
        e.family("etcd_network_peer_sent_bytes_total", .counter, help: "The total number of bytes sent to peers.")
        e.sample("etcd_network_peer_sent_bytes_total", [("To", "8e9e05c52164694d")], 12)
        e.sample("etcd_network_peer_sent_bytes_total", [("To", "91bc3c398fb3c146")], 0)
        e.family("etcd_disk_wal_fsync_duration_seconds", .histogram, help: "The latency distributions of fsync called by WAL.")
        e.histogram("etcd_disk_wal_fsync_duration_seconds", h.snapshot)
        if let r = ProcessMetrics.read() { ProcessMetrics.write(r, to: &e) }
        let out = try promtool(["check", "metrics"], input: e.text)
        #expect(out.status == 0, "promtool: \(out.text)\n\(e.text)")
    }

    @Test func procStatFieldsAreCountedAfterTheCommandName() throws {
        // A command name with spaces and parentheses, as a process may set.
        let line = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 4200 12345678 900 18446744073709551615\n"
        let f = try #require(ProcessMetrics.statFields(line))
        #expect(f == .init(utime: 250, stime: 50, startTicks: 4200, vsize: 12_345_678, rssPages: 900))
        #expect(ProcessMetrics.bootTime("cpu 1 2 3\nbtime 1700000000\nprocesses 5\n") == 1_700_000_000)
    }

    @Test func processReadingIsThisProcess() throws {
        let r = try #require(ProcessMetrics.read())
        // Other tests in this process open and close a few descriptors
        // meanwhile: 200 more stand out from that.
        let fds = (0..<200).map { _ in open("/dev/null", O_RDONLY) }
        defer { for fd in fds { close(fd) } }
        let withMore = try #require(ProcessMetrics.read())
        #expect(abs(withMore.openFDs - r.openFDs - 200) < 40, "\(r.openFDs) then \(withMore.openFDs)")
        #expect(r.residentBytes > 1_000_000 && r.virtualBytes > r.residentBytes)
        let now = Date().timeIntervalSince1970
        #expect(r.startTimeSeconds <= now + 1 && r.startTimeSeconds > now - 24 * 3600)
        #expect(r.maxFDs >= 1024 && r.cpuSeconds >= 0)
    }

    private func promtool(_ arguments: [String], input: String) throws -> (status: Int32, text: String) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("promtool-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("out").path
        let p = try ChildProcess("/usr/bin/promtool", arguments, stdin: .pipe, stdout: .file(out), stderr: .standardOutput)
        p.write(input)
        p.closeInput()
        let status = p.wait(seconds: 30)?.status ?? -1
        return (status, (try? String(contentsOfFile: out, encoding: .utf8)) ?? "")
    }
}
