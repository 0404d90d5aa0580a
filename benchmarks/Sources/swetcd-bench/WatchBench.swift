import ArgumentParser
import EtcdClient
import EtcdProto
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

    // Receivers: one per stream, on the client's loop thread, reading
    // only what they check from the encoded responses (no decoding into
    // messages, no task per stream), so that the bench costs less than
    // the servers it compares.
    let want = putTotal * watchersPerStream
    let create = watchCreateRequest(prefix: prefix)
    let finished = Counter()
    let receivers = (0..<streams).map { _ in
        StreamReceiver(watchers: watchersPerStream, want: want, sendTimes: sendTimes, ready: ready, finished: finished)
    }
    for r in receivers {
        client.onLoop {
            r.handle = client.startStream("/etcdserverpb.Watch/Watch", Array(repeating: create, count: watchersPerStream),
                                          onMessage: { r.receive($0) }, done: { r.end($0) })
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
    let drainDeadline = ContinuousClock.now.advanced(by: .seconds(60))
    while finished.value < streams && ContinuousClock.now < drainDeadline {
        try await Task.sleep(nanoseconds: 10_000_000)
    }
    // Stop every stream and read the receivers on the loop thread.
    let (merged, events, unordered, failures) = await withCheckedContinuation { continuation in
        client.onLoop {
            var merged = latencyHistogram()
            var events = 0, unordered = 0
            var failures: [String: Int] = [:]
            for r in receivers {
                r.handle?.cancel()
                merged.add(r.histogram)
                events += r.events
                unordered += r.outOfOrder
                if let f = r.failure { failures[f, default: 0] += 1 }
            }
            continuation.resume(returning: (merged, events, unordered, failures))
        }
    }
    if unordered > 0 { errors["events out of order", default: 0] += unordered }
    errors.merge(failures, uniquingKeysWith: +)
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

/// A WatchRequest creating a watcher on `prefix`.
func watchCreateRequest(prefix: String) -> [UInt8] {
    var create = Etcdserverpb_WatchCreateRequest()
    (create.key, create.rangeEnd) = KeyRange.prefix(prefix).wire
    var request = Etcdserverpb_WatchRequest()
    request.requestUnion = .createRequest(create)
    return (try? request.serializedBytes()) ?? []
}

/// One watch stream's receiver, on the client's loop thread only: counts
/// events, records each one's delay from its put's send, and checks each
/// watcher's puts arrive in order.
final class StreamReceiver: @unchecked Sendable {
    // @unchecked: touched only on the client's loop thread.
    let sendTimes: SendTimes
    let ready: Counter
    let finished: Counter
    let want: Int
    var handle: StreamHandle?
    var histogram = latencyHistogram()
    var events = 0
    var outOfOrder = 0
    var failure: String?
    private var lastPut: [Int]
    private var done = false
    // The last put looked up: a put's events arrive together.
    private var cachedPut = -1
    private var cachedSent: ContinuousClock.Instant?

    init(watchers: Int, want: Int, sendTimes: SendTimes, ready: Counter, finished: Counter) {
        lastPut = [Int](repeating: -1, count: watchers)
        self.want = want
        self.sendTimes = sendTimes
        self.ready = ready
        self.finished = finished
    }

    func receive(_ bytes: [UInt8]) {
        let now = ContinuousClock.now
        var watchID = -1
        var created = false, canceled = false
        var puts: [Int] = []
        let ok = bytes.withUnsafeBytes { buffer in
            var reader = ProtoReader(buffer)
            while let (field, wire) = reader.field() {
                switch (field, wire) {
                case (2, 0): watchID = Int(truncatingIfNeeded: reader.varint() ?? 0)
                case (3, 0): created = reader.varint() == 1
                case (4, 0): canceled = reader.varint() == 1
                case (11, 2):
                    guard let event = reader.bytes() else { return false }
                    puts.append(Self.putNumber(event) ?? -1)
                default:
                    if !reader.skip(wire) { return false }
                }
            }
            return reader.atEnd
        }
        guard ok else { return fail("undecodable response") }
        if created { return ready.add() }
        if canceled { return fail("watch canceled") }
        for n in puts {
            events += 1
            guard n >= 0 else { continue }
            if n != cachedPut { (cachedPut, cachedSent) = (n, sendTimes.get(n)) }
            if let sent = cachedSent { _ = histogram.record(UInt64(max(microseconds(now - sent), 1))) }
            if watchID >= 0 && watchID < lastPut.count {
                if n <= lastPut[watchID] { outOfOrder += 1 }
                lastPut[watchID] = n
            }
        }
        if events >= want { finish() }
    }

    func end(_ error: EtcdError?) {
        if let error { fail("\(error)") } else { finish() }
    }

    private func fail(_ reason: String) {
        if failure == nil { failure = reason }
        finish()
    }

    private func finish() {
        guard !done else { return }
        done = true
        finished.add()
    }

    /// The number after the last "-" of the event's key (`<prefix>pod-N`).
    static func putNumber(_ event: UnsafeRawBufferPointer) -> Int? {
        var reader = ProtoReader(event)
        while let (field, wire) = reader.field() {
            guard field == 2, wire == 2, let kv = reader.bytes() else {
                if !reader.skip(wire) { return nil }
                continue
            }
            var kvReader = ProtoReader(kv)
            while let (f, w) = kvReader.field() {
                guard f == 1, w == 2, let key = kvReader.bytes() else {
                    if !kvReader.skip(w) { return nil }
                    continue
                }
                var first = key.count
                while first > 0 && (48...57).contains(key[first - 1]) { first -= 1 }
                guard first < key.count else { return nil }
                return key[first...].reduce(0) { $0 * 10 + Int($1 - 48) }
            }
        }
        return nil
    }
}

/// Reads protobuf fields from encoded bytes without decoding a message.
struct ProtoReader {
    let buffer: UnsafeRawBufferPointer
    var at = 0

    init(_ buffer: UnsafeRawBufferPointer) { self.buffer = buffer }

    var atEnd: Bool { at == buffer.count }

    mutating func field() -> (Int, Int)? {
        guard at < buffer.count, let tag = varint() else { return nil }
        return (Int(tag >> 3), Int(tag & 7))
    }

    mutating func varint() -> UInt64? {
        var value: UInt64 = 0
        var shift: UInt64 = 0
        while at < buffer.count && shift < 64 {
            let byte = buffer[at]
            at += 1
            value |= UInt64(byte & 0x7f) << shift
            if byte < 0x80 { return value }
            shift += 7
        }
        return nil
    }

    mutating func bytes() -> UnsafeRawBufferPointer? {
        guard let n = varint(), n <= UInt64(buffer.count - at) else { return nil }
        defer { at += Int(n) }
        return UnsafeRawBufferPointer(rebasing: buffer[at..<at + Int(n)])
    }

    mutating func skip(_ wire: Int) -> Bool {
        switch wire {
        case 0: return varint() != nil
        case 1, 5:
            let n = wire == 1 ? 8 : 4
            guard buffer.count - at >= n else { return false }
            at += n
            return true
        case 2: return bytes() != nil
        default: return false
        }
    }
}

/// Resident memory of a local process, from /proc.
func residentBytes(_ pid: Int32) -> Int {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
          let kb = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") else { return 0 }
    return kb * 1024
}
