/// A member's log as Raft sees it: the persisted entries (storage) and
/// the ones not yet persisted (unstable), the commit index and the applied
/// index.
struct RaftLog {
    let storage: RaftStorage
    /// Entries from `unstableOffset` on, not yet handed out to persist.
    private(set) var unstable: [Entry] = []
    private(set) var unstableOffset: UInt64
    private(set) var committed: UInt64
    private(set) var applied: UInt64
    /// A snapshot received from the leader, not yet persisted.
    private(set) var pendingSnapshot: Snapshot?
    /// Unstable entries up to here are handed out to be persisted (and
    /// may still be on their way to the disk).
    private(set) var inProgress: UInt64

    init(storage: RaftStorage) {
        self.storage = storage
        unstableOffset = storage.lastIndex + 1
        inProgress = storage.lastIndex
        committed = max(storage.hardState.commit, storage.snapshot.index)
        applied = storage.firstIndex - 1
    }

    var firstIndex: UInt64 { pendingSnapshot.map { $0.index + 1 } ?? storage.firstIndex }
    var lastIndex: UInt64 { unstable.last?.index ?? pendingSnapshot?.index ?? storage.lastIndex }
    var lastTerm: UInt64 { term(lastIndex) ?? 0 }
    /// The last entry persisted (handed out and reported stable).
    var stableIndex: UInt64 { min(lastIndex, unstableOffset - 1) }

    func term(_ index: UInt64) -> UInt64? {
        if let s = pendingSnapshot {
            if index == s.index { return s.term }
            if index < s.index { return nil }
        }
        if index >= unstableOffset {
            let i = Int(index - unstableOffset)
            return i < unstable.count ? unstable[i].term : nil
        }
        return storage.term(index)
    }

    func matchTerm(_ index: UInt64, _ term: UInt64) -> Bool { self.term(index) == term }

    /// Entries [lo, hi), from storage and unstable (none below the first
    /// held: callers check `firstIndex`).
    func entries(_ lo: UInt64, _ hi: UInt64) -> [Entry] {
        guard lo < hi else { return [] }
        precondition(lo >= firstIndex, "entries from \(lo) compacted (first \(firstIndex))")
        var out: [Entry] = []
        if lo < unstableOffset { out += storage.entries(lo, min(hi, unstableOffset)) }
        if hi > unstableOffset {
            let from = Int(max(lo, unstableOffset) - unstableOffset), to = Int(hi - unstableOffset)
            out += unstable[from..<to]
        }
        return out
    }

    /// Entries from `lo` on, at most `limit`.
    func entries(from lo: UInt64, limit: Int) -> [Entry] {
        entries(lo, min(lastIndex + 1, lo + UInt64(limit)))
    }

    /// Whether a log ending at (index, term) is at least as up to date.
    func isUpToDate(index: UInt64, term: UInt64) -> Bool {
        term > lastTerm || (term == lastTerm && index >= lastIndex)
    }

    /// Unstable entries not yet handed out to be persisted.
    var toPersist: [Entry] {
        let from = Int(max(inProgress + 1, unstableOffset) - unstableOffset)
        return from < unstable.count ? Array(unstable[from...]) : []
    }

    var hasEntriesToPersist: Bool { unstableOffset + UInt64(unstable.count) > max(inProgress + 1, unstableOffset) }

    /// Entries up to `index` are on their way to the disk.
    mutating func handedOut(_ index: UInt64) { inProgress = max(inProgress, index) }

    /// Appends, replacing this log's entries from the first one's index on.
    mutating func append(_ entries: [Entry]) {
        guard let first = entries.first else { return }
        // Replaced entries being written are written again, as these.
        inProgress = min(inProgress, first.index - 1)
        precondition(first.index > committed, "overwriting committed entry \(first.index) (committed \(committed))")
        if first.index == unstableOffset + UInt64(unstable.count) {
            unstable += entries
        } else if first.index <= unstableOffset {
            // Replaces persisted entries too: storage replaces them when
            // these are persisted.
            unstableOffset = first.index
            unstable = entries
        } else {
            unstable = Array(unstable[..<Int(first.index - unstableOffset)]) + entries
        }
    }

    /// The index of the first of `entries` that this log lacks or holds
    /// with another term; 0 if it holds them all.
    func findConflict(_ entries: [Entry]) -> UInt64 {
        for e in entries where !matchTerm(e.index, e.term) { return e.index }
        return 0
    }

    /// etcd's findConflictByTerm: the last index at or below `index` whose
    /// term is at most `term` (where a leader should probe next).
    func findConflictByTerm(_ index: UInt64, _ term: UInt64) -> UInt64 {
        var i = min(index, lastIndex)
        while i > 0, let t = self.term(i), t > term { i -= 1 }
        return i
    }

    /// A leader's append: if this log holds (index, logTerm), takes the
    /// entries (dropping conflicting ones), moves the commit index, and
    /// returns the last new index.
    mutating func maybeAppend(index: UInt64, logTerm: UInt64, commit: UInt64, entries: [Entry]) -> UInt64? {
        guard matchTerm(index, logTerm) else { return nil }
        let lastNew = index + UInt64(entries.count)
        let conflict = findConflict(entries)
        if conflict != 0 {
            precondition(conflict > committed, "entry \(conflict) conflicts with a committed entry")
            append(Array(entries[Int(conflict - index - 1)...]))
        }
        commitTo(min(commit, lastNew))
        return lastNew
    }

    mutating func commitTo(_ index: UInt64) {
        guard index > committed else { return }
        precondition(index <= lastIndex, "commit \(index) beyond the log's end \(lastIndex)")
        committed = index
    }

    /// Committed entries not yet applied (after a pending snapshot, those
    /// after it).
    var nextCommitted: [Entry] { nextCommitted(upTo: committed) }

    func nextCommitted(upTo index: UInt64) -> [Entry] {
        entries(max(applied, firstIndex - 1) + 1, min(committed, index) + 1)
    }

    mutating func appliedTo(_ index: UInt64) {
        precondition(index <= committed, "applied \(index) beyond commit \(committed)")
        applied = index
    }

    /// Replaces the log with a leader's snapshot: everything up to its
    /// index is committed; the application restores from it.
    mutating func restore(_ s: Snapshot) {
        pendingSnapshot = s
        unstable = []
        unstableOffset = s.index + 1
        inProgress = s.index
        committed = s.index
    }

    /// The pending snapshot was persisted and the state machine restored.
    mutating func snapshotApplied(_ s: Snapshot) {
        guard pendingSnapshot == s else { return }
        pendingSnapshot = nil
        applied = max(applied, s.index)
    }

    /// The entries persisted up to `index` with `term` leave unstable.
    mutating func stableTo(_ index: UInt64, _ term: UInt64) {
        guard index >= unstableOffset, self.term(index) == term else { return }
        unstable.removeFirst(Int(index - unstableOffset + 1))
        unstableOffset = index + 1
    }
}
