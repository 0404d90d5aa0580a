/// What Raft reads from stable storage: the hard state and the entries
/// persisted so far. The WAL will implement it; `MemoryStorage` is for
/// tests and the simulator.
public protocol RaftStorage: AnyObject {
    var hardState: HardState { get }
    /// The latest snapshot (index 0 when there is none).
    var snapshot: Snapshot { get }
    /// Index of the first entry held (the snapshot's index + 1).
    var firstIndex: UInt64 { get }
    /// Index of the last entry held (firstIndex - 1 when empty).
    var lastIndex: UInt64 { get }
    /// The term of entry `index` (the snapshot's for its index; 0 for
    /// index 0); nil if not held.
    func term(_ index: UInt64) -> UInt64?
    /// Entries [lo, hi), all held.
    func entries(_ lo: UInt64, _ hi: UInt64) -> [Entry]
}

/// Storage in memory: what a member "persisted", which survives its crash
/// in the simulator.
public final class MemoryStorage: RaftStorage {
    public private(set) var hardState = HardState()
    public private(set) var snapshot = Snapshot()
    /// Entries after the snapshot.
    private var log: [Entry] = []

    public init() {}

    public var firstIndex: UInt64 { snapshot.index + 1 }
    public var lastIndex: UInt64 { snapshot.index + UInt64(log.count) }

    public func term(_ index: UInt64) -> UInt64? {
        if index == snapshot.index { return snapshot.term }
        guard index > snapshot.index, index <= lastIndex else { return nil }
        return log[Int(index - firstIndex)].term
    }

    public func entries(_ lo: UInt64, _ hi: UInt64) -> [Entry] {
        precondition(lo >= firstIndex && hi <= lastIndex + 1, "entries [\(lo), \(hi)) not held (\(firstIndex)...\(lastIndex))")
        return Array(log[Int(lo - firstIndex)..<Int(hi - firstIndex)])
    }

    public func setHardState(_ h: HardState) { hardState = h }

    /// Persists `entries`, replacing any held from their first index on.
    public func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        precondition(first.index >= firstIndex && first.index <= lastIndex + 1, "a gap in the log")
        if first.index <= lastIndex { log.removeSubrange(Int(first.index - firstIndex)...) }
        log += entries
    }

    /// The application's snapshot at `index` (an applied entry), with the
    /// membership then: entries up to it are dropped.
    public func compact(to index: UInt64, data: [UInt8], voters: [NodeID], learners: [NodeID]) {
        guard index > snapshot.index, let term = term(index) else { return }
        log.removeFirst(Int(index - snapshot.index))
        snapshot = Snapshot(index: index, term: term, data: data, voters: voters, learners: learners)
    }

    /// A snapshot from the leader replaces everything.
    public func apply(_ s: Snapshot) {
        guard s.index > snapshot.index else { return }
        snapshot = s
        log = []
    }
}
