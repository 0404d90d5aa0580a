/// Builds a fresh, compact bbolt file: every bucket's pages bottom-up
/// (nested buckets before the bucket that holds them, leaves before
/// branches), then the two meta pages and an empty freelist in front.
/// Buckets are never inline, pages are filled in key order, and a node too
/// big for a page takes overflow pages, as bbolt's do.
///
/// A file is written in two passes over the same entries: the first only
/// counts pages (the meta pages at the front name the root bucket's page
/// and the page count), the second emits the pages in file order. So a
/// bucket too big to hold in memory (`Entry.streamed`) is read twice and
/// never held: only the node being filled and each level's first keys are.
public struct BoltWriter {
    /// A bucket: its entries in strictly increasing key order.
    public struct Bucket: Equatable {
        public enum Entry: Equatable {
            case value([UInt8])
            case bucket(Bucket)
            /// A bucket of values only, visited in key order by `Streamed`
            /// (twice: once per pass), never held whole.
            case streamed(Streamed)

            public static func == (a: Entry, b: Entry) -> Bool {
                switch (a, b) {
                case (.value(let x), .value(let y)): return x == y
                case (.bucket(let x), .bucket(let y)): return x == y
                default: return false
                }
            }
        }
        public var entries: [(key: [UInt8], entry: Entry)]
        public init(_ entries: [(key: [UInt8], entry: Entry)] = []) { self.entries = entries }

        public static func == (a: Bucket, b: Bucket) -> Bool {
            a.entries.count == b.entries.count && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.entry == $1.entry }
        }
    }

    /// A bucket's values from a source read twice: `forEach` calls its
    /// argument with each key and value in strictly increasing key order,
    /// the same ones each time.
    public struct Streamed {
        public typealias Visit = (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void
        public typealias SizeVisit = (UnsafeRawBufferPointer, Int) throws -> Void
        public let forEach: (Visit) throws -> Void
        /// The same keys with their values' sizes only, if the source can
        /// tell them more cheaply than the values (the first pass needs no
        /// more).
        public let sizes: ((SizeVisit) throws -> Void)?
        public init(_ forEach: @escaping (Visit) throws -> Void, sizes: ((SizeVisit) throws -> Void)? = nil) {
            self.forEach = forEach
            self.sizes = sizes
        }
    }

    public enum Failure: Error, CustomStringConvertible {
        case changedBetweenPasses

        public var description: String { "a streamed bucket changed between the writer's two passes" }
    }

    public let pageSize: Int
    /// How full a page is filled before the next one starts (bbolt's
    /// default fill percent for a compacted file).
    public var fillPercent = 1.0

    public init(pageSize: Int = 4096) {
        precondition(pageSize >= 1024 && pageSize & (pageSize - 1) == 0, "a page size is a power of two of at least 1 KiB")
        self.pageSize = pageSize
    }

    /// The file holding `root`'s entries as its top-level buckets (and
    /// values, which bbolt allows at the top but etcd never writes).
    public func write(_ root: Bucket, txid: UInt64 = 1) throws -> [UInt8] {
        var out: [UInt8] = []
        try write(root, txid: txid) { out.append(contentsOf: $0) }
        return out
    }

    /// Writes the file to `emit` in order, a page or a node at a time;
    /// returns its size in bytes. `plan`, if given, hears the size before
    /// the first byte is emitted.
    @discardableResult
    public func write(_ root: Bucket, txid: UInt64 = 1, plan: ((Int) throws -> Void)? = nil,
                      to emit: ([UInt8]) throws -> Void) throws -> Int {
        var counting = Pages(writer: self, emit: nil)
        let rootPage = try counting.writeBucket(root)
        let pageCount = counting.next
        try plan?(Int(pageCount) * pageSize)
        try emit(metaPage(0, root: rootPage, pageCount: pageCount, txid: txid))
        try emit(metaPage(1, root: rootPage, pageCount: pageCount, txid: txid))
        var freelist = [UInt8](repeating: 0, count: pageSize)
        writePageHeader(&freelist, id: 2, flags: BoltFormat.freelistPage, count: 0, overflow: 0)
        try emit(freelist)
        try withoutActuallyEscaping(emit) { emit in
            var writing = Pages(writer: self, emit: emit)
            guard try writing.writeBucket(root) == rootPage, writing.next == pageCount, writing.elements == counting.elements,
                  writing.payload == counting.payload else { throw Failure.changedBetweenPasses }
        }
        return Int(pageCount) * pageSize
    }

    private func metaPage(_ id: UInt64, root: UInt64, pageCount: UInt64, txid: UInt64) -> [UInt8] {
        var page = [UInt8](repeating: 0, count: pageSize)
        writePageHeader(&page, id: id, flags: BoltFormat.metaPage, count: 0, overflow: 0)
        let m = BoltFormat.pageHeaderSize
        page.storeLE(BoltFormat.magic, at: m)
        page.storeLE(BoltFormat.version, at: m + 4)
        page.storeLE(UInt32(pageSize), at: m + 8)
        page.storeLE(UInt32(0), at: m + 12)
        page.storeLE(root, at: m + 16)
        page.storeLE(UInt64(0), at: m + 24)  // the root bucket's sequence
        page.storeLE(UInt64(2), at: m + 32)  // the freelist page
        page.storeLE(pageCount, at: m + 40)
        // bbolt writes meta (txid % 2): both valid, the second newer.
        page.storeLE(txid &- 1 &+ id, at: m + 48)
        page.storeLE(BoltFormat.fnv1a64(page[m..<(m + BoltFormat.metaChecksumOffset)]), at: m + BoltFormat.metaChecksumOffset)
        return page
    }

    fileprivate func writePageHeader(_ out: inout [UInt8], id: UInt64, flags: UInt16, count: Int, overflow: Int) {
        out.storeLE(id, at: 0)
        out.storeLE(flags, at: 8)
        out.storeLE(UInt16(count), at: 10)
        out.storeLE(UInt32(overflow), at: 12)
    }

    /// One pass: assigns page IDs from 3 on in file order and, when
    /// `emit` is given, emits each node's pages.
    private struct Pages {
        let writer: BoltWriter
        let emit: (([UInt8]) throws -> Void)?
        var next: UInt64 = 3
        /// Elements and their bytes written, for the passes to compare.
        var elements = 0
        var payload = 0

        /// Writes a bucket's pages after every nested bucket's; returns its
        /// root page.
        mutating func writeBucket(_ bucket: Bucket) throws -> UInt64 {
            var leaves = newLevel(leaf: true)
            for (key, entry) in bucket.entries {
                switch entry {
                case .value(let v): try add(key, v, 0, to: &leaves)
                case .bucket(let b): try add(key, try bucketHeader(writeBucket(b)), BoltFormat.bucketLeafFlag, to: &leaves)
                case .streamed(let s): try add(key, try bucketHeader(writeStreamed(s)), BoltFormat.bucketLeafFlag, to: &leaves)
                }
            }
            return try finish(&leaves)
        }

        private func newLevel(leaf: Bool) -> Level { Level(leaf: leaf, limit: writer.limit, keepsItems: emit != nil) }

        /// The first pass counts: it copies keys, never values.
        private mutating func writeStreamed(_ s: Streamed) throws -> UInt64 {
            var leaves = newLevel(leaf: true)
            if emit == nil {
                if let sizes = s.sizes {
                    try sizes { k, n in try add(Array(k), valueCount: n, 0, to: &leaves) }
                } else {
                    try s.forEach { k, v in try add(Array(k), valueCount: v.count, 0, to: &leaves) }
                }
            } else {
                try s.forEach { k, v in try add(Array(k), Array(v), 0, to: &leaves) }
            }
            return try finish(&leaves)
        }

        private func bucketHeader(_ root: UInt64) -> [UInt8] {
            var header = [UInt8](repeating: 0, count: BoltFormat.bucketHeaderSize)
            header.storeLE(root, at: 0)
            return header
        }

        /// Adds an element to the level's current node, writing the node
        /// first when the element would take it past the fill limit.
        private mutating func add(_ key: [UInt8], _ value: [UInt8], _ flags: UInt32, to level: inout Level) throws {
            try add(key, valueCount: value.count, flags, to: &level, value)
        }

        /// `value` nil: counting, only its size is known.
        private mutating func add(_ key: [UInt8], valueCount: Int, _ flags: UInt32, to level: inout Level,
                                  _ value: [UInt8]? = nil) throws {
            if level.wouldOverflow(adding: key.count + valueCount) { try flush(&level) }
            level.append(key, value ?? [], valueCount: valueCount, flags)
            elements += 1
            payload += key.count + valueCount
        }

        private mutating func flush(_ level: inout Level) throws {
            level.written.append((level.firstKey ?? [], try writeNode(level)))
            level.reset()
        }

        /// Writes the level's last node, then branch levels above until one
        /// page is left; returns the root.
        private mutating func finish(_ leaves: inout Level) throws -> UInt64 {
            try flush(&leaves)  // an empty bucket is one empty leaf
            var children = leaves.written
            while children.count > 1 {
                var branches = newLevel(leaf: false)
                for child in children {
                    var pageID = [UInt8](repeating: 0, count: 8)
                    pageID.storeLE(child.page, at: 0)
                    if branches.wouldOverflow(adding: child.firstKey.count) { try flush(&branches) }
                    branches.append(child.firstKey, pageID, valueCount: 0, 0)
                }
                try flush(&branches)
                children = branches.written
            }
            return children[0].page
        }

        /// Writes one node (a leaf's keys and values, or a branch's keys
        /// and child pages) at the next page, with overflow pages as needed.
        private mutating func writeNode(_ level: Level) throws -> UInt64 {
            let pages = (level.size + writer.pageSize - 1) / writer.pageSize
            let id = next
            next += UInt64(pages)
            guard let emit else { return id }
            let (items, leaf) = (level.items, level.leaf)
            var out = [UInt8](repeating: 0, count: pages * writer.pageSize)
            writer.writePageHeader(&out, id: id, flags: leaf ? BoltFormat.leafPage : BoltFormat.branchPage, count: items.count,
                                   overflow: pages - 1)
            var data = BoltFormat.pageHeaderSize + items.count * BoltFormat.elementSize
            for (i, item) in items.enumerated() {
                let e = BoltFormat.pageHeaderSize + i * BoltFormat.elementSize
                if leaf {
                    out.storeLE(item.flags, at: e)
                    out.storeLE(UInt32(data - e), at: e + 4)
                    out.storeLE(UInt32(item.key.count), at: e + 8)
                    out.storeLE(UInt32(item.value.count), at: e + 12)
                } else {
                    out.storeLE(UInt32(data - e), at: e)
                    out.storeLE(UInt32(item.key.count), at: e + 4)
                    out.replaceSubrange((e + 8)..<(e + 16), with: item.value)  // the child page
                }
                out.replaceSubrange(data..<(data + item.key.count), with: item.key)
                data += item.key.count
                if leaf {
                    out.replaceSubrange(data..<(data + item.value.count), with: item.value)
                    data += item.value.count
                }
            }
            try emit(out)
            return id
        }
    }

    fileprivate var limit: Int { Int(Double(pageSize) * fillPercent) }

    /// A level of a bucket's tree being filled: the node in progress (its
    /// elements, when they are to be written), and the first key and page
    /// of each node written.
    private struct Level {
        /// bbolt's least elements in a node: two values of several pages
        /// share their overflow pages (one alone would waste most of its
        /// last page).
        static let minimumElements = 2
        let leaf: Bool
        let limit: Int
        let keepsItems: Bool
        var items: [(key: [UInt8], value: [UInt8], flags: UInt32)] = []
        var count = 0
        var firstKey: [UInt8]?
        var size = BoltFormat.pageHeaderSize
        var written: [(firstKey: [UInt8], page: UInt64)] = []

        init(leaf: Bool, limit: Int, keepsItems: Bool) {
            self.leaf = leaf
            self.limit = limit
            self.keepsItems = keepsItems
        }

        /// A node takes elements while they fit the limit, and always at
        /// least two. (A branch element's payload is its key alone.)
        func wouldOverflow(adding payload: Int) -> Bool {
            count >= Self.minimumElements && size + BoltFormat.elementSize + payload > limit
        }

        mutating func append(_ key: [UInt8], _ value: [UInt8], valueCount: Int, _ flags: UInt32) {
            if keepsItems { items.append((key, value, flags)) }
            if count == 0 { firstKey = key }
            count += 1
            size += BoltFormat.elementSize + key.count + (leaf ? valueCount : 0)
        }

        mutating func reset() {
            items.removeAll(keepingCapacity: true)
            count = 0
            firstKey = nil
            size = BoltFormat.pageHeaderSize
        }
    }
}
