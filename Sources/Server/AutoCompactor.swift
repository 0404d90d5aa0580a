/// When to compact, as etcd's `--auto-compaction-mode` and
/// `--auto-compaction-retention` decide; no clock of its own: the server
/// calls `tick` every `tickInterval` seconds with the time and revision.
///
/// - periodic: keep `retention` seconds of history. The revision is sampled
///   every tenth of min(retention, 1 h); every min(retention, 1 h) the store
///   is compacted to the newest sample at least `retention` old (etcd's
///   periodic compactor since 3.3.3).
/// - revision: every 5 minutes, compact to the current revision minus
///   `retention` (etcd's revision compactor).
public struct AutoCompactor: Sendable {
    public enum Mode: Equatable, Sendable {
        case periodic(seconds: Double)
        case revision(keep: Int64)
    }

    public let mode: Mode
    private var samples: [(time: Double, revision: Int64)] = []
    private var lastCompaction: Double?
    private var lastTarget: Int64 = 0

    public init(_ mode: Mode) {
        self.mode = mode
    }

    /// How often `tick` wants to be called.
    public var tickInterval: Double {
        switch mode {
        case .periodic(let seconds): return compactInterval(seconds) / 10
        case .revision: return 300
        }
    }

    private func compactInterval(_ retention: Double) -> Double { min(retention, 3600) }

    /// The revision to compact to now, if any.
    public mutating func tick(now: Double, revision: Int64) -> Int64? {
        switch mode {
        case .revision(let keep):
            let target = revision - keep
            guard target > 0, target > lastTarget else { return nil }
            lastTarget = target
            return target
        case .periodic(let retention):
            samples.append((now, revision))
            // The newest sample at least `retention` old; older ones are done with.
            guard let i = samples.lastIndex(where: { now - $0.time >= retention - 1e-9 }) else { return nil }
            samples.removeFirst(i)
            let start = lastCompaction ?? samples[0].time
            guard now - start >= compactInterval(retention) - 1e-9 else { return nil }
            lastCompaction = now
            let target = samples[0].revision
            guard target > lastTarget else { return nil }
            lastTarget = target
            return target
        }
    }
}
