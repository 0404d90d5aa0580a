import ArgumentParser
import EtcdClient
import Foundation
import Histogram
import Synchronization

/// The shape of a watch run; `watch` and `watch-latency` differ only in
/// their defaults (nil here).
struct WatchRunOptions: ParsableArguments {
    @Option(help: "Watch streams (watch: 100, watch-latency: 10).") var streams: Int?
    @Option(help: "Watchers on each stream.") var watchersPerStream = 10
    @Option(help: "The watched prefix.") var prefix = "/registry/pods/"
    @Option(help: "Puts the writer makes.") var putTotal = 1_000
    @Option(help: "Puts per second, 0 for as fast as one writer goes (watch: 0, watch-latency: 100).") var putRate: Double?
    @Option(help: "Value size in bytes.") var valSize = 256
    @Option(help: "PID of a local server, to report its memory per watcher.") var serverPid: Int32?
    @Option(help: "Where the writer puts (a cluster's leader, say), when not --endpoints.") var putEndpoints: String?

    func run(_ global: GlobalOptions, defaultStreams: Int, defaultRate: Double) async throws {
        let report = try await runWatchLoad(endpoints: global.endpointList, connections: global.conns,
                                            streams: streams ?? defaultStreams, watchersPerStream: watchersPerStream,
                                            prefix: prefix, putTotal: putTotal, putRate: putRate ?? defaultRate,
                                            valSize: valSize, serverPid: serverPid,
                                            putEndpoints: putEndpoints.map { $0.split(separator: ",").map(String.init) })
        try global.print(report)
        if let perWatcher = report.serverBytesPerWatcher, !global.json {
            print("  Server memory:\t\(Int(perWatcher)) bytes per watcher")
        }
    }
}

/// Watchers on one prefix spread over streams, one writer putting keys under
/// it; measures event delivery latency (from the put's send to the event's
/// arrival), events/s, and with --server-pid the server's memory per watcher.
struct WatchBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Watchers on a prefix, one writer: event latency, events/s, memory per watcher.")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var watch: WatchRunOptions

    func run() async throws { try await watch.run(global, defaultStreams: 100, defaultRate: 0) }
}

/// The same with etcd benchmark's watch-latency habits: a fixed put rate.
struct WatchLatency: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch-latency", abstract: "Event latency at a fixed put rate (default 100 puts/s).")
    @OptionGroup var global: GlobalOptions
    @OptionGroup var watch: WatchRunOptions

    func run() async throws { try await watch.run(global, defaultStreams: 10, defaultRate: 100) }
}

final class Counter: Sendable {
    private let count = Atomic<Int>(0)
    func add() { count.wrappingAdd(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

/// When each put was sent, by its number.
final class SendTimes: Sendable {
    private let times: Mutex<[ContinuousClock.Instant?]>
    init(_ n: Int) { times = Mutex([ContinuousClock.Instant?](repeating: nil, count: n)) }
    func set(_ i: Int, _ t: ContinuousClock.Instant) { times.withLock { $0[i] = t } }
    func get(_ i: Int) -> ContinuousClock.Instant? { times.withLock { $0.indices.contains(i) ? $0[i] : nil } }
}

func runWatchLoad(endpoints: [String], connections: Int, streams: Int, watchersPerStream: Int, prefix: String,
                  putTotal: Int, putRate: Double, valSize: Int, serverPid: Int32?,
                  putEndpoints: [String]? = nil) async throws -> Report {
    let client = try EtcdClient(endpoints: endpoints, connections: connections, timeout: 60)
    defer { client.close() }
    let writer = try putEndpoints.map { try EtcdClient(endpoints: $0, connections: 1, timeout: 60) } ?? client
    defer { if writer !== client { writer.close() } }
    let rssBefore = serverPid.map(residentBytes)
    let watchers = streams * watchersPerStream
    let ready = Counter()
    let sendTimes = SendTimes(putTotal)
    let cpuBefore = cpuSeconds()

    // Receivers: one task per stream, each with its own histogram.
    let receivers = (0..<streams).map { _ in
        Task { () throws -> (Histogram<UInt64>, Int, Int) in
            var h = latencyHistogram()
            var events = 0
            // Each watcher's puts must come in the order they were made.
            var lastPut = [Int](repeating: -1, count: watchersPerStream), outOfOrder = 0
            let want = putTotal * watchersPerStream
            let stream = client.watch(Array(repeating: (KeyRange.prefix(prefix), WatchOptions()), count: watchersPerStream))
            for try await r in stream {
                if r.created { ready.add(); continue }
                let now = ContinuousClock.now
                for e in r.events {
                    events += 1
                    guard let n = Int(e.kv.keyString.split(separator: "-").last ?? "") else { continue }
                    if let sent = sendTimes.get(n) { _ = h.record(UInt64(max(microseconds(now - sent), 1))) }
                    if r.watchID >= 0 && r.watchID < watchersPerStream {
                        if n <= lastPut[Int(r.watchID)] { outOfOrder += 1 }
                        lastPut[Int(r.watchID)] = n
                    }
                }
                if events >= want { break }
            }
            return (h, events, outOfOrder)
        }
    }
    let readyDeadline = ContinuousClock.now.advanced(by: .seconds(60))
    while ready.value < watchers && ContinuousClock.now < readyDeadline {
        try await Task.sleep(nanoseconds: 10_000_000)
    }
    let rssWatching = serverPid.map(residentBytes)

    // The writer.
    let value = [UInt8](repeating: UInt8(ascii: "v"), count: valSize)
    let start = ContinuousClock.now
    var errors: [String: Int] = [:]
    for i in 0..<putTotal {
        if putRate > 0 {
            let due = start.advanced(by: .microseconds(Int64(Double(i) / putRate * 1e6)))
            if due > ContinuousClock.now { try await Task.sleep(until: due, clock: .continuous) }
        }
        sendTimes.set(i, ContinuousClock.now)
        do { try await writer.put(Array("\(prefix)pod-\(i)".utf8), value) } catch { errors["\(error)", default: 0] += 1 }
    }
    var merged = latencyHistogram()
    var events = 0
    for r in receivers {
        let (h, n, unordered) = try await withThrowingTaskGroup(of: (Histogram<UInt64>, Int, Int)?.self) { group in
            group.addTask { try await r.value }
            group.addTask { try await Task.sleep(nanoseconds: 60_000_000_000); r.cancel(); return nil }
            let first = try await group.next()!
            group.cancelAll()
            return first ?? (latencyHistogram(), 0, 0)
        }
        merged.add(h)
        events += n
        if unordered > 0 { errors["events out of order", default: 0] += unordered }
    }
    let elapsed = Double(microseconds(ContinuousClock.now - start)) / 1e6
    let cpu = cpuSeconds() - cpuBefore
    let missing = putTotal * watchers - events
    if missing > 0 { errors["events not received", default: 0] += missing }
    func ms(_ p: Double) -> Double { Double(merged.valueAtPercentile(p)) / 1000 }
    var report = Report(
        workload: "watch \(watchers) watchers over \(streams) streams, \(putRate > 0 ? "\(Int(putRate)) puts/s" : "unthrottled")",
        endpoints: endpoints, connections: connections, clients: streams, requests: events, errors: errors,
        seconds: elapsed, requestsPerSecond: Double(events) / elapsed,
        latencyMs: ["p50": ms(50), "p90": ms(90), "p99": ms(99), "p99.9": ms(99.9), "max": Double(merged.max) / 1000,
                    "mean": merged.mean / 1000],
        benchCPUPercentOfOneCore: cpu / elapsed * 100,
        benchCPUPercentOfMachine: cpu / elapsed * 100 / Double(ProcessInfo.processInfo.activeProcessorCount))
    if let before = rssBefore, let watching = rssWatching {
        report.serverBytesPerWatcher = Double(watching - before) / Double(watchers)
    }
    return report
}

/// Resident memory of a local process, from /proc.
func residentBytes(_ pid: Int32) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kb = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return 0 }
    return kb * 1024
}
