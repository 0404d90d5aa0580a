/// The parts of bbolt's file format (etcd's backend) both the reader and
/// the writer use. A file is pages of `pageSize` bytes; page 0 and 1 hold
/// the two meta records (the valid one with the higher transaction ID
/// wins), every other page is a branch, leaf or freelist page whose
/// header says how many pages after it belong to it (`overflow`).
/// Integers are little-endian (bbolt writes its structs as the machine
/// lays them out; etcd runs on little-endian machines).
enum BoltFormat {
    static let magic: UInt32 = 0xED0C_DAED
    static let version: UInt32 = 2
    /// id (8), flags (2), count (2), overflow (4).
    static let pageHeaderSize = 16
    /// magic, version, pageSize, flags (4 each), root bucket (root page,
    /// sequence: 8 each), freelist page, page count, txid, checksum (8 each).
    static let metaSize = 64
    /// The checksum (FNV-1a, 64-bit) covers the meta record before it.
    static let metaChecksumOffset = 56
    /// A branch element: pos, ksize (4 each), child page (8).
    /// A leaf element: flags, pos, ksize, vsize (4 each).
    static let elementSize = 16
    /// A bucket's value: its root page (0 when inline) and sequence.
    static let bucketHeaderSize = 16

    static let branchPage: UInt16 = 0x01
    static let leafPage: UInt16 = 0x02
    static let metaPage: UInt16 = 0x04
    static let freelistPage: UInt16 = 0x10
    /// A leaf element's flag for a nested bucket.
    static let bucketLeafFlag: UInt32 = 0x01

    static func fnv1a64(_ bytes: some Collection<UInt8>) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in bytes {
            h ^= UInt64(b)
            h = h &* 0x0000_0100_0000_01b3
        }
        return h
    }
}

extension RandomAccessCollection where Element == UInt8, Index == Int {
    /// The little-endian integer `offset` bytes from the start.
    @inline(__always) func loadLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        var v: T = 0
        for i in 0..<MemoryLayout<T>.size { v |= T(self[startIndex + offset + i]) << (8 * i) }
        return v
    }
}

extension Array where Element == UInt8 {
    @inline(__always) mutating func storeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        for i in 0..<MemoryLayout<T>.size { self[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * i)) }
    }
}
