/// What Raft reads from stable storage: the hard state and the entries
/// persisted so far. The WAL will implement it; `MemoryStorage` is for
/// tests and the simulator.
public protocol RaftStorage: AnyObject {
    var hardState: HardState { get }
    /// Index of the first entry held (1 until the log is compacted).
    var firstIndex: UInt64 { get }
    /// Index of the last entry held (firstIndex - 1 when empty).
    var lastIndex: UInt64 { get }
    /// The term of entry `index`; 0 for index 0; nil if not held.
    func term(_ index: UInt64) -> UInt64?
    /// Entries [lo, hi), all held.
    func entries(_ lo: UInt64, _ hi: UInt64) -> [Entry]
}

/// Storage in memory: what a member "persisted", which survives its crash
/// in the simulator.
public final class MemoryStorage: RaftStorage {
    public private(set) var hardState = HardState()
    private var log: [Entry] = []

    public init() {}

    public var firstIndex: UInt64 { 1 }
    public var lastIndex: UInt64 { UInt64(log.count) }

    public func term(_ index: UInt64) -> UInt64? {
        if index == 0 { return 0 }
        guard index <= lastIndex else { return nil }
        return log[Int(index - 1)].term
    }

    public func entries(_ lo: UInt64, _ hi: UInt64) -> [Entry] {
        Array(log[Int(lo - 1)..<Int(hi - 1)])
    }

    public func setHardState(_ h: HardState) { hardState = h }

    /// Persists `entries`, replacing any held from their first index on.
    public func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        precondition(first.index >= 1 && first.index <= lastIndex + 1, "a gap in the log")
        log.removeSubrange(Int(first.index - 1)...)
        log += entries
    }
}
