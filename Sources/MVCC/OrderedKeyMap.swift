/// A map from byte-string keys to values, iterated in key order.
///
/// Keys live packed in chunks of at most `maxChunkCount` entries: one byte
/// buffer and one offset array per chunk instead of one heap object per key.
/// That is most of why the index costs little memory per key. Lookups are two
/// binary searches (chunk, then entry); an insert moves at most one chunk.
struct OrderedKeyMap<Value> {
    static var maxChunkCount: Int { 128 }

    private var chunks: [Chunk] = []
    private(set) var count = 0

    struct Chunk {
        var bytes: [UInt8] = []   // the keys, concatenated in order
        var ends: [UInt32] = []   // ends[i] = end offset of key i in `bytes`
        var values: [Value] = []

        var count: Int { values.count }

        @inline(__always) func start(_ i: Int) -> Int { i == 0 ? 0 : Int(ends[i - 1]) }

        @inline(__always)
        func withKey<R>(_ i: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
            try bytes.withUnsafeBytes { all in
                try body(UnsafeRawBufferPointer(rebasing: all[start(i)..<Int(ends[i])]))
            }
        }

        func key(_ i: Int) -> [UInt8] { Array(bytes[start(i)..<Int(ends[i])]) }

        /// First index whose key is >= `key`, and whether it is equal.
        func lowerBound(_ key: UnsafeRawBufferPointer) -> (index: Int, found: Bool) {
            var lo = 0, hi = count
            while lo < hi {
                let mid = (lo + hi) / 2
                if withKey(mid, { compareBytes($0, key) }) < 0 { lo = mid + 1 } else { hi = mid }
            }
            let found = lo < count && withKey(lo, { compareBytes($0, key) }) == 0
            return (lo, found)
        }

        mutating func insert(_ key: UnsafeRawBufferPointer, _ value: Value, at i: Int) {
            let s = start(i)
            bytes.insert(contentsOf: key, at: s)
            ends.insert(UInt32(s + key.count), at: i)
            let n = UInt32(key.count)
            for j in (i + 1)..<ends.count { ends[j] += n }
            values.insert(value, at: i)
        }

        mutating func remove(at i: Int) {
            let s = start(i), e = Int(ends[i])
            bytes.removeSubrange(s..<e)
            ends.remove(at: i)
            let n = UInt32(e - s)
            for j in i..<ends.count { ends[j] -= n }
            values.remove(at: i)
        }

        /// Moves the upper half into a new chunk.
        mutating func splitOff() -> Chunk {
            let mid = count / 2
            let cut = start(mid)
            var upper = Chunk()
            upper.bytes = Array(bytes[cut...])
            upper.ends = ends[mid...].map { $0 - UInt32(cut) }
            upper.values = Array(values[mid...])
            bytes.removeSubrange(cut...)
            ends.removeSubrange(mid...)
            values.removeSubrange(mid...)
            return upper
        }
    }

    /// Index of the chunk that holds `key` or would hold it.
    private func chunkIndex(for key: UnsafeRawBufferPointer) -> Int {
        // Last chunk whose first key is <= key; chunk 0 takes everything
        // smaller (and is the only one that may be empty, right after the
        // map's first insert creates it).
        // Through a buffer pointer: indexing the array would copy each
        // probed chunk, retaining and releasing its three arrays.
        chunks.withUnsafeBufferPointer { chunks in
            var lo = 1, hi = chunks.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if chunks[mid].withKey(0, { compareBytes($0, key) }) <= 0 { lo = mid + 1 } else { hi = mid }
            }
            return max(lo - 1, 0)
        }
    }

    func value(for key: [UInt8]) -> Value? {
        key.withUnsafeBytes { k in
            guard !chunks.isEmpty else { return nil }
            let c = chunkIndex(for: k)
            let (i, found) = chunks[c].lowerBound(k)
            return found ? chunks[c].values[i] : nil
        }
    }

    /// Finds `key`, inserting `makeValue()` if absent, and lets `body` change
    /// its value in place.
    mutating func update<R>(_ key: [UInt8], orInsert makeValue: () -> Value,
                            _ body: (inout Value) throws -> R) rethrows -> R {
        try key.withUnsafeBytes { k in
            if chunks.isEmpty { chunks.append(Chunk()) }
            var c = chunkIndex(for: k)
            var (i, found) = chunks[c].lowerBound(k)
            if !found {
                chunks[c].insert(k, makeValue(), at: i)
                count += 1
                if chunks[c].count > Self.maxChunkCount {
                    let upper = chunks[c].splitOff()
                    chunks.insert(upper, at: c + 1)
                    let lowerCount = chunks[c].count
                    if i >= lowerCount { c += 1; i -= lowerCount }
                }
            }
            return try body(&chunks[c].values[i])
        }
    }

    /// Changes an existing value in place; false if `key` is absent.
    @discardableResult
    mutating func modify(_ key: [UInt8], _ body: (inout Value) -> Void) -> Bool {
        key.withUnsafeBytes { k in
            guard !chunks.isEmpty else { return false }
            let c = chunkIndex(for: k)
            let (i, found) = chunks[c].lowerBound(k)
            guard found else { return false }
            body(&chunks[c].values[i])
            return true
        }
    }

    mutating func remove(_ key: [UInt8]) {
        key.withUnsafeBytes { k in
            guard !chunks.isEmpty else { return }
            let c = chunkIndex(for: k)
            let (i, found) = chunks[c].lowerBound(k)
            guard found else { return }
            chunks[c].remove(at: i)
            count -= 1
            if chunks[c].count == 0 { chunks.remove(at: c) }
        }
    }

    /// Visits entries with `start <= key < end` in order (`end == nil`: no
    /// upper bound) until `body` returns false.
    func forEach(from start: [UInt8], to end: [UInt8]?,
                 _ body: (UnsafeRawBufferPointer, Value) throws -> Bool) rethrows {
        guard !chunks.isEmpty else { return }
        try start.withUnsafeBytes { s in
            var c = chunkIndex(for: s)
            var i = chunks[c].lowerBound(s).index
            while c < chunks.count {
                let chunk = chunks[c]
                while i < chunk.count {
                    let goOn = try chunk.withKey(i) { k -> Bool in
                        if let end, end.withUnsafeBytes({ compareBytes(k, $0) }) >= 0 { return false }
                        return try body(k, chunk.values[i])
                    }
                    if !goOn { return }
                    i += 1
                }
                c += 1
                i = 0
            }
        }
    }

    /// Visits every entry in order, letting `body` change the value or ask for
    /// the entry's removal (by returning false).
    mutating func updateAll(_ body: (UnsafeRawBufferPointer, inout Value) -> Bool) {
        var c = 0
        while c < chunks.count {
            var i = 0
            while i < chunks[c].count {
                let key = chunks[c].key(i)
                let keep = key.withUnsafeBytes { body($0, &chunks[c].values[i]) }
                if keep { i += 1 } else { chunks[c].remove(at: i); count -= 1 }
            }
            if chunks[c].count == 0 { chunks.remove(at: c) } else { c += 1 }
        }
    }
}
