import ArgumentParser
import EtcdClient
import EtcdProto
import Foundation

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "commands for checking properties of the etcd cluster",
                                                    subcommands: [CheckPerf.self])
    static let booleans: Set<String> = ["auto-compact", "auto-defrag"]
}

/// `check perf`: etcdctl's write check. Puts of 1 KiB values under a
/// prefix at the load's rate from its number of clients for 60 s, then
/// PASS or FAIL on throughput (over 90% of the rate), the slowest request
/// (at most 0.5 s) and the standard deviation (at most 0.1 s).
struct CheckPerf: CtlCommand {
    static let configuration = CommandConfiguration(commandName: "perf", abstract: "Check the performance of the etcd cluster")
    @OptionGroup var global: GlobalOptions
    @Option(help: "The performance check's workload model. Accepted workloads: s(small), m(medium), l(large), xl(xLarge)")
    var load = "s"
    @Option(help: "The prefix for writing the performance check's keys.") var prefix = "/etcdctl-check-perf/"
    @Flag(name: .customLong("auto-compact"), help: "Compact storage with last revision after test is finished.") var autoCompact = false
    @Flag(name: .customLong("auto-defrag"), help: "Defragment storage after test is finished.") var autoDefrag = false
    @Option(help: .hidden) var duration: Double = 60

    static let models: [String: (rate: Double, clients: Int)] = [
        "s": (150, 50), "m": (1000, 200), "l": (8000, 500), "xl": (15000, 1000),
    ]
    static let aliases = ["s": "s", "small": "s", "m": "m", "medium": "m", "l": "l", "large": "l", "xl": "xl", "xLarge": "xl"]

    func execute() async throws {
        guard let model = Self.aliases[load].flatMap({ Self.models[$0] }) else {
            throw CtlError(.badFeature, "unknown load option \(load)")
        }
        let client = try global.client()
        defer { client.shutdown() }
        let bytes = Array(prefix.utf8)
        do {
            var probe = Etcdserverpb_RangeRequest()
            (probe.key, probe.rangeEnd) = (Data(bytes), Data(prefixEnd(bytes)))
            probe.limit = 1
            let existing: Etcdserverpb_RangeResponse = try await client.unary("/etcdserverpb.KV/Range", probe)
            if !existing.kvs.isEmpty {
                throw CtlError(.invalidInput, "prefix \"\(prefix)\" has keys. Delete with etcdctl del --prefix \(prefix) first")
            }
        }
        let value = [UInt8](repeating: 0, count: 1024)
        let results = PerfResults()
        let progress = isatty(1) == 1 ? ProgressBar(seconds: duration) : nil
        let started = DispatchTime.now().uptimeNanoseconds
        let interval = 1e9 / model.rate
        let end = started + UInt64(duration * 1e9)
        // Each client takes the next slot of the rate; a slot past the end
        // stops it (etcdctl's limiter feeding its clients).
        let schedule = Slots(start: started, interval: interval)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<model.clients {
                group.addTask {
                    while true {
                        let slot = schedule.next()
                        guard slot < end else { return }
                        let now = DispatchTime.now().uptimeNanoseconds
                        if slot > now { try? await Task.sleep(nanoseconds: slot - now) }
                        var key = [UInt8](repeating: 0, count: 256)
                        var n = UInt64.random(in: 0..<UInt64(Int64.max)) << 1  // Go's PutVarint of a positive number
                        var i = 0
                        while n >= 0x80 { key[i] = UInt8(n & 0x7f) | 0x80; n >>= 7; i += 1 }
                        key[i] = UInt8(n)
                        let t0 = DispatchTime.now().uptimeNanoseconds
                        do {
                            try await client.put(bytes + key, value)
                            results.add(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
                        } catch {
                            results.fail("\(CtlError(error).message)")
                        }
                        progress?.show(DispatchTime.now().uptimeNanoseconds - started)
                    }
                }
            }
        }
        progress?.finish()
        let elapsed = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
        let deleted: DeleteResponse
        do {
            deleted = try await client.delete(.prefix(bytes))
        } catch {
            throw CtlError(error)
        }
        if autoCompact {
            _ = try? await client.compact(deleted.header.revision, physical: true)
            print("Compacted with revision \(deleted.header.revision)")
        }
        if autoDefrag {
            for ep in global.endpointList {
                do {
                    let _: Etcdserverpb_DefragmentResponse = try await client.unary(
                        "/etcdserverpb.Maintenance/Defragment", Etcdserverpb_DefragmentRequest(), timeout: 3600)
                    print("Finished defragmenting etcd member[\(ep)]")
                } catch {
                    FileHandle.standardError.write(Data("Failed to defragment etcd member[\(ep)] (\(CtlError(error).message))\n".utf8))
                }
            }
        }
        let s = results.summary(seconds: elapsed)
        var ok = true
        if !s.errors.isEmpty {
            print("FAIL: too many errors")
            for (error, count) in s.errors.sorted(by: { $0.key < $1.key }) { print("FAIL: ERROR(\(error)) -> \(count)") }
            ok = false
        }
        if s.rate / model.rate <= 0.9 {
            print("FAIL: Throughput too low: \(Int(s.rate) + 1) writes/s")
            ok = false
        } else {
            print("PASS: Throughput is \(Int(s.rate) + 1) writes/s")
        }
        if s.slowest > 0.5 {
            print("Slowest request took too long: \(String(format: "%f", s.slowest))s")
            ok = false
        } else {
            print("PASS: Slowest request took \(String(format: "%f", s.slowest))s")
        }
        if s.stddev > 0.1 {
            print("Stddev too high: \(String(format: "%f", s.stddev))s")
            ok = false
        } else {
            print("PASS: Stddev is \(String(format: "%f", s.stddev))s")
        }
        print(ok ? "PASS" : "FAIL")
        if !ok { throw ExitCode(CtlExit.error.rawValue) }
    }
}

/// Hands out the start times of a fixed rate, one per request.
final class Slots: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0.0
    let start: UInt64
    let interval: Double

    init(start: UInt64, interval: Double) {
        self.start = start
        self.interval = interval
    }

    func next() -> UInt64 {
        lock.lock()
        defer { lock.unlock() }
        n += 1
        return start + UInt64((n - 1) * interval)
    }
}

/// Latencies and errors from many tasks.
final class PerfResults: @unchecked Sendable {
    private let lock = NSLock()
    private var latencies: [Double] = []
    private var errors: [String: Int] = [:]

    func add(_ seconds: Double) {
        lock.lock()
        latencies.append(seconds)
        lock.unlock()
    }

    func fail(_ error: String) {
        lock.lock()
        errors[error, default: 0] += 1
        lock.unlock()
    }

    /// Requests per second (successful ones, as etcd's report counts), the
    /// slowest and the standard deviation, in seconds.
    func summary(seconds: Double) -> (rate: Double, slowest: Double, stddev: Double, errors: [String: Int]) {
        lock.lock()
        defer { lock.unlock() }
        let n = Double(latencies.count)
        let mean = latencies.reduce(0, +) / max(n, 1)
        let variance = latencies.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / max(n, 1)
        return (n / max(seconds, 1e-9), latencies.max() ?? 0, variance.squareRoot(), errors)
    }
}

/// A bar of the seconds elapsed, on a terminal.
final class ProgressBar: @unchecked Sendable {
    private let lock = NSLock()
    private let seconds: Double
    private var shown = -1

    init(seconds: Double) { self.seconds = seconds }

    func show(_ elapsedNanoseconds: UInt64) {
        let done = min(Int(Double(elapsedNanoseconds) / 1e9), Int(seconds))
        lock.lock()
        defer { lock.unlock() }
        guard done != shown else { return }
        shown = done
        let width = 40, filled = Int(Double(width) * Double(done) / max(seconds, 1))
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        FileHandle.standardOutput.write(Data("\r\(done) / \(Int(seconds)) [\(bar)] \(Int(100 * Double(done) / max(seconds, 1)))%".utf8))
    }

    func finish() { FileHandle.standardOutput.write(Data("\r\u{1b}[K".utf8)) }
}
