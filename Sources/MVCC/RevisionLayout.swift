/// How a revision's stored value is laid out in LMDB's pages.
///
/// A value small enough for a leaf node is stored whole under its revision
/// key. A larger one LMDB would put alone on overflow pages, wasting the
/// rest of the last page (a 4 KiB value took two pages, 8 KiB three). It is
/// split instead into parts under the revision key plus a part number: a
/// head that fills whole overflow pages exactly, and the rest in parts that
/// fit leaf nodes and share leaf pages with other revisions. (Measurements
/// in docs/architecture.md, "Storage layout".)
struct RevisionLayout: Sendable {
    /// LMDB's page size for the file.
    let pageSize: Int
    /// False only in tests, to write a store as before parts existed.
    var splitsLargeValues = true

    /// LMDB's page header and node header, in bytes.
    static let pageHeader = 16
    static let nodeHeader = 8
    /// A part's key: the revision key and one byte, the part number. Part
    /// numbers stay below 16, so they never read as a tombstone's `t`.
    static let partKeySize = RevisionKey.size + 1
    static let maxParts = 16

    /// LMDB's largest leaf node (`me_nodemax`): a bigger key and value go
    /// to overflow pages.
    var nodeMax: Int { (((pageSize - Self.pageHeader) / 2) & ~1) - 2 }

    /// Whether a value of `count` bytes is stored whole, in a leaf node.
    func storesWhole(_ count: Int, tombstone: Bool) -> Bool {
        tombstone || !splitsLargeValues || Self.nodeHeader + RevisionKey.size + count <= nodeMax
    }

    /// The byte ranges of the parts of a value of `count` bytes (one not
    /// stored whole): a head of as many whole overflow pages as the value
    /// fills, then leaf parts of equal size for the rest.
    func parts(of count: Int) -> [Range<Int>] {
        let leafPart = nodeMax - Self.nodeHeader - Self.partKeySize
        let pages = (count + Self.pageHeader) / pageSize
        var ranges: [Range<Int>] = []
        var start = 0
        if pages > 0 {
            start = pages * pageSize - Self.pageHeader
            ranges.append(0..<start)
        }
        let rest = count - start
        if rest > 0 {
            let n = (rest + leafPart - 1) / leafPart
            for i in 0..<n {
                let end = start + rest * (i + 1) / n
                ranges.append((start + rest * i / n)..<end)
            }
        }
        return ranges
    }

    /// Whether `key` is a part key (and not a whole revision's key).
    static func isPartKey(_ key: UnsafeRawBufferPointer) -> Bool {
        key.count == partKeySize && key[RevisionKey.size] < maxParts && key[8] == RevisionKey.separator
    }
}
