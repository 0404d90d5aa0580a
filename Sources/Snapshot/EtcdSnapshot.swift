import Auth
import Bolt
import MVCC

/// Writes swetcd's committed state as etcd's backend would hold it: a
/// bbolt file with etcd's buckets and encodings, which real `etcdctl
/// snapshot status` reads and `etcdctl snapshot restore` (3.4) or
/// `etcdutl snapshot restore` (3.5) turns into a data dir a real etcd
/// serves. The key bucket is streamed from the read transaction (read
/// twice: once to lay the file out, once to write it), never held.
public enum EtcdSnapshot {
    /// A member as the `members` bucket keeps it.
    public struct Member: Sendable {
        public var id: UInt64
        public var name: String
        public var peerURLs: [String]
        public var clientURLs: [String]
        public var isLearner: Bool

        public init(id: UInt64, name: String, peerURLs: [String], clientURLs: [String], isLearner: Bool) {
            self.id = id
            self.name = name
            self.peerURLs = peerURLs
            self.clientURLs = clientURLs
            self.isLearner = isLearner
        }
    }

    /// What the backend does not hold in a form etcd's buckets take: the
    /// cluster as the server knows it, and the Raft term of the consistent
    /// index (etcd 3.5 keeps it in `meta`).
    public struct Cluster: Sendable {
        public var members: [Member]
        public var removed: [UInt64]
        public var version: String
        public var term: UInt64

        public init(members: [Member], removed: [UInt64], version: String, term: UInt64) {
            self.members = members
            self.removed = removed
            self.version = version
            self.term = term
        }
    }

    /// Writes the snapshot's bbolt file (without the SHA-256 etcd appends
    /// when it streams one) to `emit`; `plan` hears its size first.
    /// Returns the size.
    @discardableResult
    public static func write(_ state: LMDBBackend.CommittedState, cluster: Cluster, plan: ((Int) throws -> Void)? = nil,
                             to emit: ([UInt8]) throws -> Void) throws -> Int {
        let names = EtcdBuckets.names
        func bucket(_ name: String, _ b: BoltWriter.Bucket) -> (key: [UInt8], entry: BoltWriter.Bucket.Entry) {
            (Array(name.utf8), .bucket(b))
        }
        var meta = BoltWriter.Bucket()
        if let index = try state.metaInt64(.consistentIndex) {
            meta.entries.append((Array("consistent_index".utf8), .value(EtcdBuckets.int64Bytes(index))))
        }
        if let rev = try state.metaInt64(.finishedCompactRevision) {
            meta.entries.append((Array("finishedCompactRev".utf8), .value(EtcdBuckets.revisionBytes(rev))))
        }
        if let rev = try state.metaInt64(.scheduledCompactRevision) {
            meta.entries.append((Array("scheduledCompactRev".utf8), .value(EtcdBuckets.revisionBytes(rev))))
        }
        meta.entries.append((Array("term".utf8), .value(EtcdBuckets.int64Bytes(Int64(bitPattern: cluster.term)))))
        meta.entries.sort { $0.key.lexicographicallyPrecedes($1.key) }

        var leases = BoltWriter.Bucket()
        try state.forEachLease { id, bytes in
            guard let lease = StoredLease(id: id, encoded: bytes) else {
                throw SnapshotFile.Failure.unreadable("lease \(id) is damaged in the backend")
            }
            leases.entries.append((EtcdBuckets.int64Bytes(id), .value(EtcdBuckets.encoded(lease))))
        }
        let auth = try EtcdBuckets.buckets(of: try state.meta(.auth).map { bytes in
            guard let store = AuthStore(encoded: bytes) else { throw SnapshotFile.Failure.unreadable("the auth store is damaged in the backend") }
            return store
        } ?? AuthStore())
        let members = BoltWriter.Bucket(cluster.members.map(EtcdBuckets.memberEntry)
            .sorted { $0.key.lexicographicallyPrecedes($1.key) })
        let removed = BoltWriter.Bucket(cluster.removed.map { (Array(String($0, radix: 16).utf8), .value(Array("removed".utf8))) }
            .sorted { $0.key.lexicographicallyPrecedes($1.key) })
        // The v2 keys (served with --enable-v2) in a bucket of our own, only
        // when there are any: etcd keeps them outside its backend, and its
        // restore leaves a bucket it does not know alone.
        var v2 = BoltWriter.Bucket()
        try state.forEachV2 { k, v in v2.entries.append((Array(k), .value(Array(v)))) }
        if let index = try state.meta(.v2Index) { v2.entries.append((EtcdBuckets.v2IndexKey, .value(index))) }
        v2.entries.sort { $0.key.lexicographicallyPrecedes($1.key) }
        let revisions = BoltWriter.Streamed({ visit in try state.forEachRevision(visit) },
                                            sizes: { visit in try state.forEachRevisionSize(visit) })
        // Top-level buckets in byte order, as etcd's are.
        let root = BoltWriter.Bucket([
            bucket(names.alarm, BoltWriter.Bucket()),
            bucket(names.auth, auth.auth),
            bucket(names.roles, auth.roles),
            bucket(names.users, auth.users),
            bucket(names.cluster, BoltWriter.Bucket([(Array("clusterVersion".utf8), .value(Array(cluster.version.utf8)))])),
            (Array(names.key.utf8), .streamed(revisions)),
            bucket(names.lease, leases),
            bucket(names.members, members),
            bucket(names.removed, removed),
            bucket(names.meta, meta),
        ] + (v2.entries.isEmpty ? [] : [bucket(names.v2, v2)]))
        return try BoltWriter(pageSize: 4096).write(root, plan: plan, to: emit)
    }
}
