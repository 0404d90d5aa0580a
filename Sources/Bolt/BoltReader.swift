/// Why a file is not a bbolt database we can read.
public struct BoltError: Error, CustomStringConvertible, Equatable {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// A bbolt database file, read from its bytes: the buckets and their
/// entries, checked as they are read (every page inside the file and
/// below the meta's page count, every element inside its page, no page
/// reached twice), so damaged input is an error, never a crash or an
/// endless walk.
public struct BoltReader {
    public let pageSize: Int
    /// The transaction ID of the meta in use.
    public let txid: UInt64
    /// The meta's page count (the high-water mark).
    public let pageCount: UInt64
    let bytes: [UInt8]
    let rootPage: UInt64

    /// An entry of a bucket: a value, or a nested bucket.
    public enum Entry: Equatable {
        case value(ArraySlice<UInt8>)
        case bucket
    }

    public init(bytes: [UInt8]) throws(BoltError) {
        self.bytes = bytes
        // Meta 0 is at offset 0; meta 1 one page further, the page size
        // being what meta 0 says or, if it is damaged, any bbolt allows.
        let first = Self.meta(bytes, at: 0)
        var candidates: [Meta] = []
        if case .success(let m) = first { candidates.append(m) }
        let sizes: [Int]
        if case .success(let m) = first { sizes = [m.pageSize] } else { sizes = [4096, 1024, 2048, 8192, 16384, 32768, 65536] }
        for size in sizes {
            if case .success(let m) = Self.meta(bytes, at: size), m.pageSize == size { candidates.append(m); break }
        }
        guard let meta = candidates.max(by: { $0.txid < $1.txid }) else {
            if case .failure(let why) = first { throw why }
            throw BoltError("invalid database: no valid meta page")
        }
        pageSize = meta.pageSize
        txid = meta.txid
        pageCount = meta.pageCount
        rootPage = meta.root
        guard UInt64(bytes.count / pageSize) >= min(pageCount, UInt64(Int.max)) else {
            throw BoltError("invalid database: the meta counts \(pageCount) pages of \(pageSize) bytes, the file has \(bytes.count) bytes")
        }
    }

    struct Meta { var pageSize: Int; var root: UInt64; var pageCount: UInt64; var txid: UInt64 }

    static func meta(_ b: [UInt8], at page: Int) -> Result<Meta, BoltError> {
        let m = page + BoltFormat.pageHeaderSize
        guard m + BoltFormat.metaSize <= b.count else { return .failure(BoltError("invalid database: too short for a meta page")) }
        guard b.loadLE(UInt32.self, at: m) == BoltFormat.magic else { return .failure(BoltError("invalid database: not a bbolt file (bad magic)")) }
        let version = b.loadLE(UInt32.self, at: m + 4)
        guard version == BoltFormat.version else { return .failure(BoltError("invalid database: version \(version), not \(BoltFormat.version)")) }
        let checksum = b.loadLE(UInt64.self, at: m + BoltFormat.metaChecksumOffset)
        guard BoltFormat.fnv1a64(b[m..<(m + BoltFormat.metaChecksumOffset)]) == checksum else {
            return .failure(BoltError("invalid database: meta checksum mismatch"))
        }
        let pageSize = Int(b.loadLE(UInt32.self, at: m + 8))
        guard pageSize >= 512, pageSize <= 1 << 20, pageSize & (pageSize - 1) == 0 else {
            return .failure(BoltError("invalid database: page size \(pageSize)"))
        }
        return .success(Meta(pageSize: pageSize, root: b.loadLE(UInt64.self, at: m + 16),
                             pageCount: b.loadLE(UInt64.self, at: m + 40), txid: b.loadLE(UInt64.self, at: m + 48)))
    }

    /// Visits the entries of the bucket at `path` (bucket names from the
    /// top) in key order; throws if a name on the path is not a bucket.
    public func forEach(inBucket path: [[UInt8]], _ body: (ArraySlice<UInt8>, Entry) throws -> Void) throws {
        var visited = Set<UInt64>()
        var bucket = BucketRef.page(rootPage)
        for name in path {
            var found: BucketRef?
            try walk(bucket, &visited) { k, v, isBucket in
                if found == nil, isBucket, k.elementsEqual(name) { found = try nested(v) }
            }
            guard let next = found else { throw BoltError("no bucket \(String(decoding: name, as: UTF8.self))") }
            bucket = next
            visited.removeAll()
        }
        try walk(bucket, &visited) { k, v, isBucket in try body(k, isBucket ? .bucket : .value(v)) }
    }

    /// The names of the top-level buckets.
    public func bucketNames() throws -> [[UInt8]] {
        var names: [[UInt8]] = []
        try forEach(inBucket: []) { k, e in if e == .bucket { names.append(Array(k)) } }
        return names
    }

    /// A bucket's root: a page, or an inline page (bytes of a value).
    enum BucketRef { case page(UInt64), inline(ArraySlice<UInt8>) }

    func nested(_ value: ArraySlice<UInt8>) throws(BoltError) -> BucketRef {
        guard value.count >= BoltFormat.bucketHeaderSize else { throw BoltError("invalid database: a bucket value of \(value.count) bytes") }
        let root = value.loadLE(UInt64.self, at: 0)
        if root != 0 { return .page(root) }
        return .inline(value.dropFirst(BoltFormat.bucketHeaderSize))
    }

    /// The bytes of page `id` and its overflow pages.
    func page(_ id: UInt64) throws(BoltError) -> ArraySlice<UInt8> {
        guard id >= 2, id < pageCount, id < UInt64(bytes.count / pageSize) else {
            throw BoltError("invalid database: page \(id) is outside the file (\(pageCount) pages)")
        }
        let start = Int(id) * pageSize
        let overflow = UInt64(bytes.loadLE(UInt32.self, at: start + 12))
        guard id + overflow < pageCount, Int(id + overflow + 1) * pageSize <= bytes.count else {
            throw BoltError("invalid database: page \(id) runs \(overflow) pages past the file")
        }
        guard bytes.loadLE(UInt64.self, at: start) == id else { throw BoltError("invalid database: page \(id) says it is page \(bytes.loadLE(UInt64.self, at: start))") }
        return bytes[start..<(start + Int(overflow + 1) * pageSize)]
    }

    /// Visits a bucket's entries in order: key, value, whether it is a
    /// nested bucket.
    func walk(_ bucket: BucketRef, _ visited: inout Set<UInt64>,
              _ body: (ArraySlice<UInt8>, ArraySlice<UInt8>, Bool) throws -> Void) throws {
        switch bucket {
        case .inline(let p): try walkPage(p, depth: 0, &visited, body)
        case .page(let id): try walkPage(id, depth: 0, &visited, body)
        }
    }

    private func walkPage(_ id: UInt64, depth: Int, _ visited: inout Set<UInt64>,
                          _ body: (ArraySlice<UInt8>, ArraySlice<UInt8>, Bool) throws -> Void) throws {
        guard depth < 64 else { throw BoltError("invalid database: branch pages nested more than 64 deep") }
        guard visited.insert(id).inserted else { throw BoltError("invalid database: page \(id) is reached twice") }
        let p = try page(id)
        if p.loadLE(UInt16.self, at: 8) & BoltFormat.branchPage != 0 {
            let count = Int(p.loadLE(UInt16.self, at: 10))
            guard BoltFormat.pageHeaderSize + count * BoltFormat.elementSize <= p.count else {
                throw BoltError("invalid database: page \(id) has \(count) elements, more than fit")
            }
            for i in 0..<count {
                let e = BoltFormat.pageHeaderSize + i * BoltFormat.elementSize
                try walkPage(p.loadLE(UInt64.self, at: e + 8), depth: depth + 1, &visited, body)
            }
        } else {
            try walkPage(p, depth: depth, &visited, body)
        }
    }

    /// A leaf page's entries (an inline bucket's page too: its positions
    /// are relative to the page's own bytes).
    private func walkPage(_ p: ArraySlice<UInt8>, depth: Int, _ visited: inout Set<UInt64>,
                          _ body: (ArraySlice<UInt8>, ArraySlice<UInt8>, Bool) throws -> Void) throws {
        guard p.count >= BoltFormat.pageHeaderSize else { throw BoltError("invalid database: a page of \(p.count) bytes") }
        let s = p.startIndex
        let flags = p.loadLE(UInt16.self, at: 8)
        guard flags & BoltFormat.leafPage != 0 else { throw BoltError("invalid database: a bucket page with flags \(flags)") }
        let count = Int(p.loadLE(UInt16.self, at: 10))
        guard BoltFormat.pageHeaderSize + count * BoltFormat.elementSize <= p.count else {
            throw BoltError("invalid database: a leaf page has \(count) elements, more than fit")
        }
        func u32(_ o: Int) -> Int { Int(p.loadLE(UInt32.self, at: o)) }
        for i in 0..<count {
            let e = BoltFormat.pageHeaderSize + i * BoltFormat.elementSize
            let (flags, pos, ksize, vsize) = (u32(e), u32(e + 4), u32(e + 8), u32(e + 12))
            let keyStart = e + pos
            guard keyStart + ksize + vsize <= p.count else {
                throw BoltError("invalid database: a leaf element runs past its page")
            }
            let key = p[(s + keyStart)..<(s + keyStart + ksize)]
            let value = p[(s + keyStart + ksize)..<(s + keyStart + ksize + vsize)]
            let isBucket = UInt32(flags) & BoltFormat.bucketLeafFlag != 0
            try body(key, value, isBucket)
        }
    }
}
