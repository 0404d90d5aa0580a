/// Builds a fresh, compact bbolt file in one pass: every bucket's pages
/// bottom-up (nested buckets before the bucket that holds them, leaves
/// before branches), then the two meta pages and an empty freelist in
/// front. Buckets are never inline, pages are filled in key order, and a
/// node too big for a page takes overflow pages, as bbolt's do.
public struct BoltWriter {
    /// A bucket: its entries in strictly increasing key order.
    public struct Bucket: Equatable {
        public enum Entry: Equatable {
            case value([UInt8])
            case bucket(Bucket)
        }
        public var entries: [(key: [UInt8], entry: Entry)]
        public init(_ entries: [(key: [UInt8], entry: Entry)] = []) { self.entries = entries }

        public static func == (a: Bucket, b: Bucket) -> Bool {
            a.entries.count == b.entries.count && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.entry == $1.entry }
        }
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
    public func write(_ root: Bucket, txid: UInt64 = 1) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 3 * pageSize)  // two metas, the freelist
        var next: UInt64 = 3
        let rootPage = writeBucket(root, &out, &next)
        writePageHeader(&out, id: 2, flags: BoltFormat.freelistPage, count: 0, overflow: 0)
        for (i, id) in [UInt64(0), 1].enumerated() {
            writePageHeader(&out, id: id, flags: BoltFormat.metaPage, count: 0, overflow: 0)
            let m = Int(id) * pageSize + BoltFormat.pageHeaderSize
            out.storeLE(BoltFormat.magic, at: m)
            out.storeLE(BoltFormat.version, at: m + 4)
            out.storeLE(UInt32(pageSize), at: m + 8)
            out.storeLE(UInt32(0), at: m + 12)
            out.storeLE(rootPage, at: m + 16)
            out.storeLE(UInt64(0), at: m + 24)  // the root bucket's sequence
            out.storeLE(UInt64(2), at: m + 32)  // the freelist page
            out.storeLE(next, at: m + 40)
            // bbolt writes meta (txid % 2): both valid, the second newer.
            out.storeLE(txid &- 1 &+ UInt64(i), at: m + 48)
            out.storeLE(BoltFormat.fnv1a64(out[m..<(m + BoltFormat.metaChecksumOffset)]), at: m + BoltFormat.metaChecksumOffset)
        }
        return out
    }

    private func writePageHeader(_ out: inout [UInt8], id: UInt64, flags: UInt16, count: Int, overflow: Int) {
        let s = Int(id) * pageSize
        out.storeLE(id, at: s)
        out.storeLE(flags, at: s + 8)
        out.storeLE(UInt16(count), at: s + 10)
        out.storeLE(UInt32(overflow), at: s + 12)
    }

    /// Writes a bucket's pages after every nested bucket's; returns its
    /// root page.
    private func writeBucket(_ bucket: Bucket, _ out: inout [UInt8], _ next: inout UInt64) -> UInt64 {
        // Leaf elements: nested buckets are written first, for their roots.
        var elements: [(key: [UInt8], value: [UInt8], isBucket: Bool)] = []
        elements.reserveCapacity(bucket.entries.count)
        for (key, entry) in bucket.entries {
            switch entry {
            case .value(let v): elements.append((key, v, false))
            case .bucket(let b):
                var header = [UInt8](repeating: 0, count: BoltFormat.bucketHeaderSize)
                header.storeLE(writeBucket(b, &out, &next), at: 0)
                elements.append((key, header, true))
            }
        }
        // Leaves, then branch levels until one page is left.
        var level: [(firstKey: [UInt8], page: UInt64)] = []
        for group in groups(elements.map { $0.key.count + $0.value.count }) {
            let id = writeNode(elements[group].map { ($0.key, $0.value, $0.isBucket ? BoltFormat.bucketLeafFlag : 0) }, leaf: true, &out, &next)
            level.append((elements[group].first?.key ?? [], id))
        }
        while level.count > 1 {
            var parents: [(firstKey: [UInt8], page: UInt64)] = []
            for group in groups(level.map { $0.firstKey.count }) {
                let children = level[group]
                let id = writeNode(children.map { child in
                    var pageID = [UInt8](repeating: 0, count: 8)
                    pageID.storeLE(child.page, at: 0)
                    return (child.firstKey, pageID, UInt32(0))
                }, leaf: false, &out, &next)
                parents.append((children.first!.firstKey, id))
            }
            level = parents
        }
        return level[0].page
    }

    /// Splits elements of the given payload sizes into pages: a page
    /// takes elements while they fit `fillPercent` of it, and always at
    /// least one (an empty bucket is one empty page).
    private func groups(_ payloads: [Int]) -> [Range<Int>] {
        let limit = Int(Double(pageSize) * fillPercent)
        var out: [Range<Int>] = []
        var start = 0, size = BoltFormat.pageHeaderSize
        for (i, p) in payloads.enumerated() {
            let element = BoltFormat.elementSize + p
            if i > start && size + element > limit {
                out.append(start..<i)
                start = i
                size = BoltFormat.pageHeaderSize
            }
            size += element
        }
        out.append(start..<payloads.count)
        return out
    }

    /// Writes one node (a leaf's keys and values, or a branch's keys and
    /// child pages) at the next page, with overflow pages as needed.
    private func writeNode(_ items: [(key: [UInt8], value: [UInt8], flags: UInt32)], leaf: Bool,
                           _ out: inout [UInt8], _ next: inout UInt64) -> UInt64 {
        let size = BoltFormat.pageHeaderSize + items.reduce(0) { $0 + BoltFormat.elementSize + $1.key.count + (leaf ? $1.value.count : 0) }
        let pages = (size + pageSize - 1) / pageSize
        let id = next
        next += UInt64(pages)
        let start = Int(id) * pageSize
        out.append(contentsOf: repeatElement(0, count: pages * pageSize))
        writePageHeader(&out, id: id, flags: leaf ? BoltFormat.leafPage : BoltFormat.branchPage, count: items.count, overflow: pages - 1)
        var data = start + BoltFormat.pageHeaderSize + items.count * BoltFormat.elementSize
        for (i, item) in items.enumerated() {
            let e = start + BoltFormat.pageHeaderSize + i * BoltFormat.elementSize
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
        return id
    }
}
