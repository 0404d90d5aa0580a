/// A point in the store's history. `main` counts write transactions (one per
/// Put, DeleteRange or writing Txn); `sub` numbers the changes inside one.
public struct Revision: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var main: Int64
    public var sub: Int64

    public init(main: Int64, sub: Int64 = 0) {
        self.main = main
        self.sub = sub
    }

    public static func < (a: Revision, b: Revision) -> Bool {
        a.main != b.main ? a.main < b.main : a.sub < b.sub
    }

    public var description: String { "\(main).\(sub)" }
}

/// The backend key of a revision: 8-byte big-endian main, `_`, 8-byte
/// big-endian sub (17 bytes), plus a trailing `t` when the revision is a
/// tombstone (a delete). Byte order equals revision order, so the backend's
/// sorted iteration walks history in order.
public struct RevisionKey: Hashable, Sendable {
    public static let size = 17
    public static let tombstoneSize = 18
    static let separator: UInt8 = UInt8(ascii: "_")
    static let tombstoneMark: UInt8 = UInt8(ascii: "t")

    public var revision: Revision
    public var isTombstone: Bool

    public init(_ revision: Revision, isTombstone: Bool = false) {
        self.revision = revision
        self.isTombstone = isTombstone
    }

    public var bytes: [UInt8] { withUnsafeBytes { Array($0) } }

    /// The encoded key on the stack, for the duration of `body`.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: Self.tombstoneSize) { buffer in
            let n = isTombstone ? Self.tombstoneSize : Self.size
            var main = UInt64(bitPattern: revision.main).bigEndian
            var sub = UInt64(bitPattern: revision.sub).bigEndian
            let raw = UnsafeMutableRawPointer(buffer.baseAddress!)
            raw.copyMemory(from: &main, byteCount: 8)
            raw.storeBytes(of: Self.separator, toByteOffset: 8, as: UInt8.self)
            (raw + 9).copyMemory(from: &sub, byteCount: 8)
            if isTombstone { raw.storeBytes(of: Self.tombstoneMark, toByteOffset: 17, as: UInt8.self) }
            return try body(UnsafeRawBufferPointer(start: raw, count: n))
        }
    }

    /// Decodes a backend key; nil for anything that is not one.
    public init?(bytes: UnsafeRawBufferPointer) {
        guard bytes.count == Self.size || bytes.count == Self.tombstoneSize,
              bytes[8] == Self.separator else { return nil }
        if bytes.count == Self.tombstoneSize && bytes[17] != Self.tombstoneMark { return nil }
        let main = Int64(bitPattern: Self.loadBigEndian(bytes, at: 0))
        let sub = Int64(bitPattern: Self.loadBigEndian(bytes, at: 9))
        self.init(Revision(main: main, sub: sub), isTombstone: bytes.count == Self.tombstoneSize)
    }

    public init?(bytes: [UInt8]) {
        guard let key = bytes.withUnsafeBytes({ RevisionKey(bytes: $0) }) else { return nil }
        self = key
    }

    private static func loadBigEndian(_ b: UnsafeRawBufferPointer, at offset: Int) -> UInt64 {
        var v: UInt64 = 0
        for i in 0..<8 { v = v << 8 | UInt64(b[offset + i]) }
        return v
    }
}
