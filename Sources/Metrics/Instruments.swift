import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A count that only goes up, added to from any thread without a lock
/// (one relaxed atomic add) and read at scrape time.
public final class Counter: Sendable {
    private let value = Atomic<Int>(0)

    public init() {}

    public func add(_ n: Int = 1) { value.wrappingAdd(n, ordering: .relaxed) }

    public var count: Int { value.load(ordering: .relaxed) }
}

/// A Prometheus histogram of durations with fixed upper bounds, observed
/// from any thread without a lock. Bucket counts are kept per bucket (not
/// cumulative) and summed at scrape; the sum is kept in nanoseconds.
public final class Histogram: @unchecked Sendable {
    /// Upper bounds in seconds, ascending (`+Inf` is implied).
    public let bounds: [Double]
    // bounds.count + 1 atomics, the last for values above every bound.
    private let counts: UnsafeMutablePointer<Atomic<Int>>
    private let sumNanoseconds = Atomic<Int>(0)

    public init(bounds: [Double]) {
        precondition(zip(bounds, bounds.dropFirst()).allSatisfy { $0 < $1 }, "histogram bounds must ascend")
        self.bounds = bounds
        counts = .allocate(capacity: bounds.count + 1)
        for i in 0...bounds.count { (counts + i).initialize(to: Atomic(0)) }
    }

    deinit {
        counts.deinitialize(count: bounds.count + 1)
        counts.deallocate()
    }

    public func observe(seconds: Double) {
        // Prometheus's rule: a value goes in the first bucket whose bound is >= it.
        var i = 0
        while i < bounds.count && seconds > bounds[i] { i += 1 }
        counts[i].wrappingAdd(1, ordering: .relaxed)
        sumNanoseconds.wrappingAdd(Int((max(seconds, 0) * 1e9).rounded()), ordering: .relaxed)
    }

    /// A duration measured on a nanosecond clock.
    public func observe(nanoseconds: UInt64) { observe(seconds: Double(nanoseconds) / 1e9) }

    /// Runs `body` and observes how long it took (monotonic clock).
    public func time<R>(_ body: () throws -> R) rethrows -> R {
        let start = Self.monotonicSeconds()
        defer { observe(seconds: Self.monotonicSeconds() - start) }
        return try body()
    }

    public static func monotonicSeconds() -> Double {
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
    }

    /// What a scrape reads: cumulative counts per bound (the last is +Inf's,
    /// the total), and the sum in seconds.
    public struct Snapshot: Sendable {
        public let bounds: [Double]
        public let cumulativeCounts: [Int]
        public let sum: Double
        public var count: Int { cumulativeCounts.last ?? 0 }
    }

    public var snapshot: Snapshot {
        var cumulative: [Int] = []
        cumulative.reserveCapacity(bounds.count + 1)
        var total = 0
        for i in 0...bounds.count {
            total += counts[i].load(ordering: .relaxed)
            cumulative.append(total)
        }
        return Snapshot(bounds: bounds, cumulativeCounts: cumulative,
                        sum: Double(sumNanoseconds.load(ordering: .relaxed)) / 1e9)
    }

    /// client_golang's `ExponentialBuckets(start, factor, count)`, which
    /// etcd's histograms use.
    public static func exponentialBuckets(start: Double, factor: Double, count: Int) -> [Double] {
        var bounds: [Double] = []
        var b = start
        for _ in 0..<count {
            bounds.append(b)
            b *= factor
        }
        return bounds
    }

    /// client_golang's `DefBuckets` (grpc-go's interceptors' handling time).
    public static let defaultBuckets: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
}
