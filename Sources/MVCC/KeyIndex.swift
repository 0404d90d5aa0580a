/// The revisions of one key, grouped into generations. A generation runs from
/// the put that creates the key to the delete (tombstone) that ends it; a put
/// after a delete starts a new generation.
///
/// Worked example (the tests build exactly this): key "foo" is
/// put at 1.0, put at 2.0, deleted at 3.0, put at 4.0, put at 5.0, deleted at
/// 6.0, put at 7.0:
///
///     generation 0: [1.0, 2.0, 3.0(t)]  created 1.0, version 3
///     generation 1: [4.0, 5.0, 6.0(t)]  created 4.0, version 3
///     generation 2: [7.0]               created 7.0, version 1 (open)
///
/// get(at: 2) finds 2.0 (version 2, created 1.0); get(at: 3) finds nothing
/// (deleted at 3); get(at: 5) finds 5.0 (version 2, created 4.0).
///
/// compact(n) drops what no read at a revision >= n can reach: every
/// generation whose tombstone is <= n, and inside the generation that is live
/// at n every revision below the newest one <= n, which is kept:
///
///     compact(1): [1.0, 2.0, 3.0(t)] [4.0, 5.0, 6.0(t)] [7.0]   keeps 1.0
///     compact(2): [2.0, 3.0(t)] [4.0, 5.0, 6.0(t)] [7.0]        keeps 2.0
///     compact(3): [4.0, 5.0, 6.0(t)] [7.0]                      keeps nothing
///     compact(5): [5.0, 6.0(t)] [7.0]                           keeps 5.0
///     compact(6): [7.0]                                         keeps nothing
///     compact(7): [7.0]                                         keeps 7.0
///
/// Had the key been deleted at 8.0 as well, compact(8) would leave no
/// generation and the key would leave the index.
///
/// A generation's `version` and `created` survive compaction, so versions of
/// the revisions that remain stay correct.
struct KeyIndex {
    struct Generation {
        var created: Revision
        /// Puts (and the closing tombstone) made in this generation so far.
        var version: Int64
        /// Revisions still held, ascending; the last is a tombstone when the
        /// generation is closed.
        var revs: [Revision]

        static let empty = Generation(created: Revision(main: 0), version: 0, revs: [])
    }

    // The newest generation is stored inline and the closed ones apart, so
    // the common key (never deleted) costs one allocation, its `revs`, not
    // two: the empty `closed` array allocates nothing.

    /// Every generation but the newest; each ends in a tombstone.
    private var closed: [Generation] = []
    /// The newest generation: open, or empty when the key is deleted now
    /// (or was never written).
    private var current = Generation.empty

    /// All generations, oldest first (for tests and rare paths).
    var generations: [Generation] {
        closed.isEmpty && current.revs.isEmpty ? [] : closed + [current]
    }

    /// What a read of the key at a revision finds.
    struct Found: Equatable {
        var modified: Revision
        var created: Revision
        var version: Int64
    }

    /// True when nothing of the key is left: it should leave the index.
    var isEmpty: Bool { closed.isEmpty && current.revs.isEmpty }

    /// True when the key exists at the newest revision.
    var isLive: Bool { !current.revs.isEmpty }

    /// The newest revision of the key (a tombstone when it is deleted).
    var modified: Revision? { current.revs.last ?? closed.last?.revs.last }

    mutating func put(_ rev: Revision) {
        precondition(modified.map { $0 < rev } ?? true, "put at \(rev) is not after the key's newest revision")
        if current.revs.isEmpty { current.created = rev }
        current.revs.append(rev)
        current.version += 1
    }

    /// Records a delete; the key must be live.
    mutating func tombstone(_ rev: Revision) {
        precondition(isLive, "tombstone of a key that is not live")
        put(rev)
        closed.append(current)
        current = .empty
    }

    /// Re-creates the index of a key from the first revision the backend
    /// still holds for it (after compaction earlier ones are gone).
    mutating func restore(created: Revision, modified: Revision, version: Int64) {
        precondition(isEmpty)
        current = Generation(created: created, version: version, revs: [modified])
    }

    /// The version of the key visible at `atRev`, nil if it did not exist then.
    func get(atRev: Int64) -> Found? {
        guard let g = findGeneration(atRev: atRev),
              let n = g.revs.lastIndex(where: { $0.main <= atRev }) else { return nil }
        return Found(modified: g.revs[n], created: g.created,
                     version: g.version - Int64(g.revs.count - 1 - n))
    }

    private func findGeneration(atRev: Int64) -> Generation? {
        if let first = current.revs.first, first.main <= atRev { return current }
        for g in closed.reversed() {
            // A closed generation whose tombstone is at or before atRev means
            // the key was deleted then.
            if g.revs[g.revs.count - 1].main <= atRev { return nil }
            if g.revs[0].main <= atRev { return g }
        }
        return nil
    }

    /// Compacts at `atRev` (see the type's comment) and reports the revision
    /// of this key that the backend must keep, if any. After it, `isEmpty`
    /// tells whether the key should leave the index.
    mutating func compact(atRev: Int64) -> Revision? {
        // Drop closed generations that ended at or before atRev.
        let ended = closed.prefix { $0.revs[$0.revs.count - 1].main <= atRev }.count
        closed.removeFirst(ended)
        func keepNewest(_ g: inout Generation) -> Revision? {
            guard let n = g.revs.lastIndex(where: { $0.main <= atRev }) else { return nil }
            g.revs.removeFirst(n)
            return g.revs[0]
        }
        return closed.isEmpty ? keepNewest(&current) : keepNewest(&closed[0])
    }
}
