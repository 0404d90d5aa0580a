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
    }

    /// Never empty while the key is in the index. All but the last
    /// generation are closed; an empty `revs` in the last one means the key
    /// is deleted now.
    private(set) var generations: [Generation] = []

    /// What a read of the key at a revision finds.
    struct Found: Equatable {
        var modified: Revision
        var created: Revision
        var version: Int64
    }

    var isEmpty: Bool { generations.count == 1 && generations[0].revs.isEmpty || generations.isEmpty }

    /// True when the key exists at the newest revision.
    var isLive: Bool { !(generations.last?.revs.isEmpty ?? true) }

    /// The newest revision of the key (a tombstone when it is deleted).
    var modified: Revision? {
        for g in generations.reversed() { if let r = g.revs.last { return r } }
        return nil
    }

    mutating func put(_ rev: Revision) {
        if generations.isEmpty { generations.append(Generation(created: rev, version: 0, revs: [])) }
        let last = generations.count - 1
        precondition(modified.map { $0 < rev } ?? true, "put at \(rev) is not after the key's newest revision")
        if generations[last].revs.isEmpty { generations[last].created = rev }
        generations[last].revs.append(rev)
        generations[last].version += 1
    }

    /// Records a delete; the key must be live.
    mutating func tombstone(_ rev: Revision) {
        precondition(isLive, "tombstone of a key that is not live")
        put(rev)
        generations.append(Generation(created: Revision(main: 0), version: 0, revs: []))
    }

    /// Re-creates the index of a key from the first revision the backend
    /// still holds for it (after compaction earlier ones are gone).
    mutating func restore(created: Revision, modified: Revision, version: Int64) {
        precondition(generations.isEmpty)
        generations = [Generation(created: created, version: version, revs: [modified])]
    }

    /// The version of the key visible at `atRev`, nil if it did not exist then.
    func get(atRev: Int64) -> Found? {
        guard let g = findGeneration(atRev: atRev) else { return nil }
        guard let n = g.revs.lastIndex(where: { $0.main <= atRev }) else { return nil }
        return Found(modified: g.revs[n], created: g.created,
                     version: g.version - Int64(g.revs.count - 1 - n))
    }

    private func findGeneration(atRev: Int64) -> Generation? {
        let lastIndex = generations.count - 1
        for gi in stride(from: lastIndex, through: 0, by: -1) {
            let g = generations[gi]
            guard let first = g.revs.first else { continue }
            // A closed generation whose tombstone is at or before atRev means
            // the key was deleted then.
            if gi != lastIndex, g.revs[g.revs.count - 1].main <= atRev { return nil }
            if first.main <= atRev { return g }
        }
        return nil
    }

    /// All revisions (tombstones included) with main >= `rev`, oldest first.
    func revisions(since rev: Int64) -> [(Revision, isTombstone: Bool)] {
        var out: [(Revision, isTombstone: Bool)] = []
        for (gi, g) in generations.enumerated() {
            for (ri, r) in g.revs.enumerated() where r.main >= rev {
                out.append((r, gi != generations.count - 1 && ri == g.revs.count - 1))
            }
        }
        return out
    }

    /// Compacts at `atRev` (see the type's comment) and reports the revision
    /// of this key that the backend must keep, if any. After it, `isEmpty`
    /// tells whether the key should leave the index.
    mutating func compact(atRev: Int64) -> Revision? {
        var gi = 0
        // Skip closed generations that ended at or before atRev.
        while gi < generations.count - 1,
              let tomb = generations[gi].revs.last, tomb.main <= atRev {
            gi += 1
        }
        generations.removeFirst(gi)
        guard let n = generations[0].revs.lastIndex(where: { $0.main <= atRev }) else { return nil }
        generations[0].revs.removeFirst(n)
        return generations[0].revs[0]
    }
}
