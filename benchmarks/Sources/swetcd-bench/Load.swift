import EtcdClient
import Histogram
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// What one run measured.
struct Report: Codable {
    var workload: String
    var endpoints: [String]
    var connections: Int
    var clients: Int
    var requests: Int
    var errors: [String: Int]
    var seconds: Double
    var requestsPerSecond: Double
    /// Latencies in milliseconds.
    var latencyMs: [String: Double]
    /// CPU the bench itself used: percent of one core, and of the machine.
    var benchCPUPercentOfOneCore: Double
    var benchCPUPercentOfMachine: Double
    /// Watch runs with --server-pid: the server's RSS growth per watcher.
    var serverBytesPerWatcher: Double?
}

/// Hands out request numbers to the clients until the total or the time
/// runs out.
final class Budget: Sendable {
    private let issued = Atomic<Int>(0)
    let total: Int
    let deadline: ContinuousClock.Instant?

    init(total: Int, seconds: Double?) {
        self.total = total
        deadline = seconds.map { ContinuousClock.now.advanced(by: .milliseconds(Int($0 * 1000))) }
    }

    /// The next request's number, or nil when the run is over.
    func next() -> Int? {
        if let deadline, ContinuousClock.now >= deadline { return nil }
        let n = issued.wrappingAdd(1, ordering: .relaxed).oldValue
        return n < total ? n : nil
    }
}

/// Runs `clients` concurrent loops, each sending one request at a time
/// (`request(n)` for the n-th), and reports throughput and latency.
func runLoad(workload: String, endpoints: [String], connections: Int, clients: Int, total: Int,
             seconds: Double?, request: @escaping @Sendable (EtcdClient, Int) async throws -> Void) async throws -> Report {
    let client = try EtcdClient(endpoints: endpoints, connections: connections, timeout: 30)
    defer { client.close() }
    let budget = Budget(total: total, seconds: seconds)
    let cpuBefore = cpuSeconds()
    let start = ContinuousClock.now
    let results = try await withThrowingTaskGroup(of: (Histogram<UInt64>, [String: Int]).self) { group in
        for _ in 0..<clients {
            // On the client's loop thread: no thread hop per call (see
            // EventLoop's TaskExecutor), so the bench spends less CPU than
            // the servers it measures.
            group.addTask(executorPreference: client.executor) {
                var h = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
                var errors: [String: Int] = [:]
                while let n = budget.next() {
                    let t0 = ContinuousClock.now
                    do {
                        try await request(client, n)
                        _ = h.record(UInt64(max(microseconds(ContinuousClock.now - t0), 1)))
                    } catch {
                        errors["\(error)", default: 0] += 1
                    }
                }
                return (h, errors)
            }
        }
        var all: [(Histogram<UInt64>, [String: Int])] = []
        for try await r in group { all.append(r) }
        return all
    }
    let elapsed = Double(microseconds(ContinuousClock.now - start)) / 1e6
    let cpu = cpuSeconds() - cpuBefore
    var merged = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    var errors: [String: Int] = [:]
    for (h, e) in results {
        merged.add(h)
        errors.merge(e, uniquingKeysWith: +)
    }
    let ok = Int(merged.totalCount)
    func ms(_ p: Double) -> Double { Double(merged.valueAtPercentile(p)) / 1000 }
    return Report(
        workload: workload, endpoints: endpoints, connections: connections, clients: clients,
        requests: ok, errors: errors, seconds: elapsed, requestsPerSecond: Double(ok) / elapsed,
        latencyMs: ["p50": ms(50), "p90": ms(90), "p99": ms(99), "p99.9": ms(99.9),
                    "max": Double(merged.max) / 1000, "mean": merged.mean / 1000],
        benchCPUPercentOfOneCore: cpu / elapsed * 100,
        benchCPUPercentOfMachine: cpu / elapsed * 100 / Double(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
}

func microseconds(_ d: Duration) -> Int64 {
    d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
}

/// User plus system CPU seconds of this process so far.
func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
        + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

/// `size` bytes naming key number `n`: its decimal digits, zero-padded
/// (and cut to the size), so keys are distinct and readable.
func benchKey(_ n: Int, size: Int) -> [UInt8] {
    let digits = Array(String(n).utf8)
    if digits.count >= size { return Array(digits.suffix(size)) }
    return [UInt8](repeating: UInt8(ascii: "0"), count: size - digits.count) + digits
}
