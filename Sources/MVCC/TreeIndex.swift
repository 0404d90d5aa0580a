/// The in-memory index of every key's revisions, in key order. It answers
/// "which revision of which keys are visible at revision r in [key, end)"
/// without touching values; the backend is read only for the values.
struct TreeIndex {
    private var keys = OrderedKeyMap<KeyIndex>()

    /// Keys in the index, deleted ones not yet compacted away included.
    var keyCount: Int { keys.count }
    /// Keys that exist now (not deleted).
    private(set) var liveKeyCount = 0

    func get(_ key: [UInt8], atRev: Int64) -> KeyIndex.Found? {
        keys.value(for: key)?.get(atRev: atRev)
    }

    /// The key's whole index, for operations that need more than one read.
    func keyIndex(_ key: [UInt8]) -> KeyIndex? { keys.value(for: key) }

    /// Keys of `range` visible at `atRev`, in key order: the first `limit`
    /// of them (0 = all) and how many there are in all.
    func range(_ range: KeyRange, atRev: Int64, limit: Int = 0)
        -> (entries: [(key: [UInt8], found: KeyIndex.Found)], total: Int) {
        var entries: [(key: [UInt8], found: KeyIndex.Found)] = []
        var total = 0
        visit(range, atRev: atRev) { key, found in
            total += 1
            if limit == 0 || entries.count < limit { entries.append((Array(key), found)) }
            return true
        }
        return (entries, total)
    }

    /// Counts keys of `range` visible at `atRev`.
    func count(_ range: KeyRange, atRev: Int64) -> Int {
        var total = 0
        visit(range, atRev: atRev) { _, _ in total += 1; return true }
        return total
    }

    /// Calls `body` for each key of `range` visible at `atRev` until it
    /// returns false.
    func visit(_ range: KeyRange, atRev: Int64,
               _ body: (UnsafeRawBufferPointer, KeyIndex.Found) -> Bool) {
        switch range {
        case .single(let key):
            if let found = get(key, atRev: atRev) { key.withUnsafeBytes { _ = body($0, found) } }
        case .from(let start, let end):
            keys.forEach(from: start, to: end) { key, index in
                guard let found = index.get(atRev: atRev) else { return true }
                return body(key, found)
            }
        }
    }

    mutating func put(_ key: [UInt8], _ rev: Revision) {
        let revived = keys.update(key, orInsert: { KeyIndex() }) { index in
            defer { index.put(rev) }
            return !index.isLive
        }
        if revived { liveKeyCount += 1 }
    }

    /// Records a put of `key` at `rev` and returns what a read at `readRev`
    /// saw just before it: one search instead of a `get` and a `put`.
    mutating func put(_ key: [UInt8], _ rev: Revision, seenAt readRev: Int64) -> KeyIndex.Found? {
        let (seen, revived) = keys.update(key, orInsert: { KeyIndex() }) { index in
            let seen = index.get(atRev: readRev), revived = !index.isLive
            index.put(rev)
            return (seen, revived)
        }
        if revived { liveKeyCount += 1 }
        return seen
    }

    /// Records the delete of a live key.
    mutating func tombstone(_ key: [UInt8], _ rev: Revision) {
        let live = keys.modify(key) { $0.tombstone(rev) }
        precondition(live, "tombstone of a key that is not in the index")
        liveKeyCount -= 1
    }

    /// Rebuilds a key's entry from the backend (see `KeyIndex.restore`).
    mutating func restore(_ kv: KeyValue, at rev: Revision, isTombstone: Bool) {
        if isTombstone {
            // A tombstone for a key we have not seen has nothing left to end.
            var ended = false
            keys.modify(kv.key) { index in
                if index.isLive {
                    index.tombstone(rev)
                    ended = true
                }
            }
            if ended { liveKeyCount -= 1 }
            return
        }
        let revived = keys.update(kv.key, orInsert: { KeyIndex() }) { index in
            defer {
                if index.isEmpty {
                    index.restore(created: Revision(main: kv.createRevision), modified: rev, version: kv.version)
                } else {
                    index.put(rev)
                }
            }
            return !index.isLive
        }
        if revived { liveKeyCount += 1 }
    }

    /// Compacts every key at `atRev` and returns the revisions the backend
    /// must keep among those <= atRev; keys left with no generation go.
    mutating func compact(atRev: Int64) -> Set<Revision> {
        var keep = Set<Revision>()
        keys.updateAll { _, index in
            if let kept = index.compact(atRev: atRev) { keep.insert(kept) }
            return !index.isEmpty
        }
        return keep
    }
}
