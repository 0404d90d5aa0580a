/// A lease as the backend keeps it, in the `lease` table: the TTL it was
/// granted and the seconds it had left at its latest checkpoint (0 when
/// none was taken since the grant or the last renewal).
public struct StoredLease: Equatable, Sendable {
    public var id: Int64
    public var ttl: Int64
    public var remainingTTL: Int64

    public init(id: Int64, ttl: Int64, remainingTTL: Int64 = 0) {
        self.id = id
        self.ttl = ttl
        self.remainingTTL = remainingTTL
    }

    /// TTL and remaining TTL, 8 big-endian bytes each (our own table: no
    /// other program reads it).
    public var encoded: [UInt8] {
        bigEndianBytes(UInt64(bitPattern: ttl)) + bigEndianBytes(UInt64(bitPattern: remainingTTL))
    }

    public init?(id: Int64, encoded b: [UInt8]) {
        guard b.count == 16, let ttl = bigEndianUInt64(b[0..<8]), let remaining = bigEndianUInt64(b[8..<16]) else { return nil }
        self.init(id: id, ttl: Int64(bitPattern: ttl), remainingTTL: Int64(bitPattern: remaining))
    }
}

extension Store {
    /// Writes (or rewrites) a lease in the current backend batch.
    public func save(_ lease: StoredLease) throws {
        try backend.putLease(lease.id, lease.encoded)
    }

    public func removeLease(_ id: Int64) throws {
        try backend.deleteLease(id)
    }

    /// Every stored lease, in ID order.
    public func storedLeases() throws -> [StoredLease] {
        var out: [StoredLease] = []
        try backend.forEachLease { id, bytes in
            guard let lease = StoredLease(id: id, encoded: bytes) else {
                throw CorruptLease(id: id, byteCount: bytes.count)
            }
            out.append(lease)
        }
        backend.endRead()
        return out
    }
}

/// A `lease` table entry that is not 16 bytes: the backend is damaged.
public struct CorruptLease: Error, CustomStringConvertible {
    public let id: Int64
    public let byteCount: Int
    public var description: String { "backend lease \(id) has \(byteCount) bytes, not 16" }
}
