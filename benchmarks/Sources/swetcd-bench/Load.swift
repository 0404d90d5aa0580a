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

/// Runs `clients` concurrent callers, each with one request in flight
/// (`encode(n)`: the method path and encoded request of the n-th), and
/// reports throughput and latency. Everything runs on the client's loop
/// thread through callbacks: no task or thread hop per request, so the
/// bench costs the machine less than the server it measures.
func runLoad(workload: String, endpoints: [String], connections: Int, clients: Int, total: Int,
             seconds: Double?, pollForReply: Double = 0, settings: ClientSettings = ClientSettings(), encode: @escaping @Sendable (Int) -> (path: String, bytes: [UInt8])) async throws -> Report {
    let client = try settings.client(endpoints, connections: connections)
    defer { client.close() }
    let cpuBefore = cpuSeconds()
    let start = ContinuousClock.now
    let run = CallbackLoad(client: client, budget: Budget(total: total, seconds: seconds), encode: encode)
    run.pollForReply = pollForReply
    await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
        client.onLoop { run.start(clients: clients) { done.resume() } }
    }
    let elapsed = Double(microseconds(ContinuousClock.now - start)) / 1e6
    let cpu = cpuSeconds() - cpuBefore
    let merged = run.histogram
    let ok = Int(merged.totalCount)
    func ms(_ p: Double) -> Double { Double(merged.valueAtPercentile(p)) / 1000 }
    return Report(
        workload: workload, endpoints: endpoints, connections: connections, clients: clients,
        requests: ok, errors: run.errors, seconds: elapsed, requestsPerSecond: Double(ok) / elapsed,
        latencyMs: ["p50": ms(50), "p90": ms(90), "p99": ms(99), "p99.9": ms(99.9),
                    "max": Double(merged.max) / 1000, "mean": merged.mean / 1000],
        benchCPUPercentOfOneCore: cpu / elapsed * 100,
        benchCPUPercentOfMachine: cpu / elapsed * 100 / Double(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
}

/// The callers of one run, driven from the client's loop thread only.
private final class CallbackLoad: @unchecked Sendable {
    // @unchecked: after `start`, touched only on the client's loop thread
    // (and read by `runLoad` once `finished` has run).
    let client: EtcdClient
    let budget: Budget
    let encode: @Sendable (Int) -> (path: String, bytes: [UInt8])
    var histogram = latencyHistogram()
    var errors: [String: Int] = [:]
    private var active = 0
    private var finished: (() -> Void)?

    init(client: EtcdClient, budget: Budget, encode: @escaping @Sendable (Int) -> (path: String, bytes: [UInt8])) {
        self.client = client
        self.budget = budget
        self.encode = encode
    }

    func start(clients: Int, finished: @escaping () -> Void) {
        self.finished = finished
        active = clients
        for caller in 0..<clients { next(caller) }
    }

    /// Each caller stays on one connection, as in etcd's benchmark tool.
    private func next(_ caller: Int) {
        guard let n = budget.next() else {
            active -= 1
            if active == 0 { finished?() }
            return
        }
        let (path, bytes) = encode(n)
        let t0 = ContinuousClock.now
        client.startUnary(path, bytes, caller: caller) { [self] result in
            switch result {
            case .success:
                _ = histogram.record(UInt64(max(microseconds(ContinuousClock.now - t0), 1)))
                next(caller)
            case .failure(let e):
                errors["\(e)", default: 0] += 1
                // Not from inside the failing call: a dead connection fails
                // at once, and the next call would recurse.
                client.onLoop { [self] in next(caller) }
            }
        }
        if pollForReply > 0 { client.pollLoop(for: pollForReply) }
    }
    /// Seconds the loop polls after sending, instead of sleeping.
    var pollForReply = 0.0
}

func microseconds(_ d: Duration) -> Int64 {
    d.components.seconds * 1_000_000 + d.components.attoseconds / 1_000_000_000_000
}

/// A histogram of latencies in microseconds, up to `maxMicroseconds` (a
/// minute unless given), three significant digits.
func latencyHistogram(maxMicroseconds: UInt64 = 60_000_000) -> Histogram<UInt64> {
    Histogram<UInt64>(highestTrackableValue: maxMicroseconds, numberOfSignificantValueDigits: .three)
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

/// How the bench's clients reach the server: TLS, and a user to
/// authenticate as.
struct ClientSettings: Sendable {
    var tls: EtcdClient.TLS?
    var user: String?
    var password: String?

    func client(_ endpoints: [String], connections: Int = 1) throws -> EtcdClient {
        try EtcdClient(endpoints: endpoints, connections: connections, timeout: 30, tls: tls, user: user, password: password)
    }
}
