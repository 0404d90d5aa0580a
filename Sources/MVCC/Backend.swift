/// Where the store keeps its revisions and metadata. The store writes through
/// it as it applies; `commit()` makes a batch of those writes one backend
/// transaction. Reads see uncommitted writes.
///
/// Implementations: `LMDBBackend` (the real one) and `MemoryBackend` (tests).
public protocol Backend: AnyObject {
    /// The `mvccpb.KeyValue` stored at a revision, decoded; nil if absent.
    func keyValue(at key: RevisionKey, skipValue: Bool) throws -> KeyValue?
    /// Visits stored revisions in order, starting at `start` (tombstones
    /// included), until `body` returns false.
    func forEachRevision(from start: Revision,
                         _ body: (RevisionKey, UnsafeRawBufferPointer) throws -> Bool) throws
    func putRevision(_ key: RevisionKey, value: [UInt8]) throws
    func deleteRevision(_ key: RevisionKey) throws

    func meta(_ name: MetaKey) throws -> [UInt8]?
    func setMeta(_ name: MetaKey, _ value: [UInt8]) throws

    /// The `lease` table: one entry per granted lease, keyed by its ID.
    func putLease(_ id: Int64, _ value: [UInt8]) throws
    func deleteLease(_ id: Int64) throws
    /// Visits every lease in ID order (as unsigned 64-bit big-endian keys).
    func forEachLease(_ body: (Int64, [UInt8]) throws -> Void) throws

    /// The `v2` table: the v2 keys store's nodes (the server's keys and
    /// encoding), separate from the v3 keyspace.
    func putV2(_ key: [UInt8], _ value: [UInt8]) throws
    func deleteV2(_ key: [UInt8]) throws
    /// Visits every stored v2 node's value, in key order.
    func forEachV2(_ body: ([UInt8]) throws -> Void) throws

    /// Writes since the last commit.
    var uncommittedWrites: Int { get }
    func commit() throws
    /// Ends the read view a burst of reads used, so the backend may reclaim
    /// space those reads pinned.
    func endRead()
    /// Visits every entry of every table (table name, key, value), for the
    /// whole-backend hash.
    func forEachEntry(_ body: (String, UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) throws
}

/// Names of the entries of the backend's `meta` table.
public enum MetaKey: String, CaseIterable, Sendable {
    /// Index of the last consensus entry applied to this backend.
    case consistentIndex = "consistent_index"
    /// Revision of the newest Compact requested (index already trimmed).
    case scheduledCompactRevision = "scheduledCompactRev"
    /// Revision of the newest compaction whose backend part is complete.
    case finishedCompactRevision = "finishedCompactRev"
    /// The member's and cluster's IDs, chosen once when the data dir is new.
    case memberID = "member_id"
    case clusterID = "cluster_id"
    /// Raised alarms (the server's encoding).
    case alarms = "alarms"
    /// Users, roles and permissions (the Auth module's encoding).
    case auth = "auth"
    /// The v2 keys store's index (its nodes are in the `v2` table).
    case v2Index = "v2_index"
    /// Each member's published name and client URLs (the server's
    /// encoding: an etcdserverpb.MemberListResponse).
    case memberAttributes = "member_attributes"
    /// The cluster's members and the IDs removed from it (the server's
    /// encoding), as of the consistent index.
    case membership = "membership"

    var bytes: [UInt8] { Array(rawValue.utf8) }
}

/// A lease's backend key: its ID as 8 big-endian bytes.
func leaseKey(_ id: Int64) -> [UInt8] { bigEndianBytes(UInt64(bitPattern: id)) }

func leaseID(fromKey b: UnsafeRawBufferPointer) -> Int64? {
    bigEndianUInt64(b).map { Int64(bitPattern: $0) }
}

extension Backend {
    public func metaInt64(_ name: MetaKey) throws -> Int64? {
        try meta(name).flatMap(bigEndianUInt64).map { Int64(bitPattern: $0) }
    }

    public func setMetaInt64(_ name: MetaKey, _ v: Int64) throws {
        try setMeta(name, bigEndianBytes(UInt64(bitPattern: v)))
    }
}

/// A backend in memory, for tests. Writes count as committed at once; the
/// `committed` snapshot is what survives a simulated restart.
public final class MemoryBackend: Backend {
    private var revisions: [RevisionKey: [UInt8]] = [:]
    private var metas: [MetaKey: [UInt8]] = [:]
    private var leases: [Int64: [UInt8]] = [:]
    private var v2: [[UInt8]: [UInt8]] = [:]
    public private(set) var uncommittedWrites = 0

    public init() {}

    public func keyValue(at key: RevisionKey, skipValue: Bool) throws -> KeyValue? {
        guard let bytes = revisions[key] else { return nil }
        return bytes.withUnsafeBytes { KeyValue(encoded: $0, skipValue: skipValue) }
    }

    public func forEachRevision(from start: Revision,
                                _ body: (RevisionKey, UnsafeRawBufferPointer) throws -> Bool) throws {
        // Sorted by the encoded key, as a real backend iterates.
        let ordered = revisions.keys.filter { $0.revision >= start }
            .sorted { compareBytes($0.bytes, $1.bytes) < 0 }
        for key in ordered {
            guard let value = revisions[key] else { continue }
            if try !value.withUnsafeBytes({ try body(key, $0) }) { return }
        }
    }

    public func putRevision(_ key: RevisionKey, value: [UInt8]) throws {
        revisions[key] = value
        uncommittedWrites += 1
    }

    public func deleteRevision(_ key: RevisionKey) throws {
        revisions[key] = nil
        uncommittedWrites += 1
    }

    public func meta(_ name: MetaKey) throws -> [UInt8]? { metas[name] }

    public func setMeta(_ name: MetaKey, _ value: [UInt8]) throws {
        metas[name] = value
        uncommittedWrites += 1
    }

    public func putLease(_ id: Int64, _ value: [UInt8]) throws {
        leases[id] = value
        uncommittedWrites += 1
    }

    public func deleteLease(_ id: Int64) throws {
        leases[id] = nil
        uncommittedWrites += 1
    }

    public func forEachLease(_ body: (Int64, [UInt8]) throws -> Void) throws {
        for (id, v) in leases.sorted(by: { UInt64(bitPattern: $0.key) < UInt64(bitPattern: $1.key) }) { try body(id, v) }
    }

    public func putV2(_ key: [UInt8], _ value: [UInt8]) throws {
        v2[key] = value
        uncommittedWrites += 1
    }

    public func deleteV2(_ key: [UInt8]) throws {
        v2[key] = nil
        uncommittedWrites += 1
    }

    public func forEachV2(_ body: ([UInt8]) throws -> Void) throws {
        for (_, v) in v2.sorted(by: { compareBytes($0.key, $1.key) < 0 }) { try body(v) }
    }

    public func commit() throws { uncommittedWrites = 0 }
    public func endRead() {}

    public func forEachEntry(_ body: (String, UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) throws {
        for (k, v) in revisions.sorted(by: { compareBytes($0.key.bytes, $1.key.bytes) < 0 }) {
            try k.bytes.withUnsafeBytes { kb in try v.withUnsafeBytes { try body("key", kb, $0) } }
        }
        for (k, v) in metas.sorted(by: { $0.key.rawValue < $1.key.rawValue }) {
            try k.bytes.withUnsafeBytes { kb in try v.withUnsafeBytes { try body("meta", kb, $0) } }
        }
        try forEachLease { id, v in
            try leaseKey(id).withUnsafeBytes { kb in try v.withUnsafeBytes { try body("lease", kb, $0) } }
        }
        for (k, v) in v2.sorted(by: { compareBytes($0.key, $1.key) < 0 }) {
            try k.withUnsafeBytes { kb in try v.withUnsafeBytes { try body("v2", kb, $0) } }
        }
    }

    public var revisionCount: Int { revisions.count }
}
