import Auth
import Bolt
import Checksum
import COpenSSL
import MVCC
#if canImport(Glibc)
import Glibc
#endif

/// A snapshot file as `etcdctl snapshot save` (or swetcdctl's) writes it
/// from swetcd: the LMDB database followed by its SHA-256.
/// `restore` makes a new data dir from one (`swetcd snapshot restore`,
/// `swetcdctl snapshot restore`): the member started on it has the same
/// keys, revision and HashKV, and its WAL starts empty. `status` reads one
/// as `etcdctl snapshot status` does.
public enum SnapshotFile {
    public enum Failure: Error, CustomStringConvertible {
        case unreadable(String)
        case integrity(String)
        case dataDirExists(String)
        case write(String)

        public var description: String {
            switch self {
            case .unreadable(let why): return "cannot read the snapshot: \(why)"
            case .integrity(let why): return "snapshot file integrity check failed: \(why)"
            case .dataDirExists(let d): return "data-dir \"\(d)\" exists"
            case .write(let why): return "cannot write the data dir: \(why)"
            }
        }
    }

    /// etcd's test for a snapshot's trailing SHA-256: the file is 32 bytes
    /// past a multiple of 512 (a database file alone never is).
    static func hasTrailingHash(_ bytes: [UInt8]) -> Bool { bytes.count % 512 == 32 }

    /// The file's bytes and the length of the database in it, once its
    /// SHA-256 checks out.
    static func verified(_ file: String) throws -> (bytes: [UInt8], body: Int) {
        try verified(try read(file))
    }

    static func verified(_ bytes: [UInt8]) throws -> (bytes: [UInt8], body: Int) {
        guard bytes.count > 32 else { throw Failure.integrity("\(bytes.count) bytes is too short") }
        guard hasTrailingHash(bytes) else { throw Failure.integrity("snapshot missing hash but --skip-hash-check=false") }
        let body = bytes.count - 32
        var digest = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeBufferPointer { _ = SHA256($0.baseAddress, body, &digest) }
        guard Array(bytes[body...]) == digest else { throw Failure.integrity("SHA-256 mismatch") }
        return (bytes, body)
    }

    public struct Status: Equatable, Sendable {
        /// CRC-32C over every table, as the Hash RPC computes it.
        public var hash: UInt32
        public var revision: Int64
        public var totalKeys: Int
        public var totalSize: Int
    }

    /// What `snapshot status` prints: the database's hash, revision, entries
    /// and size, read from a copy (opening LMDB writes a lock file).
    public static func status(file: String) throws -> Status {
        let whole = try read(file)
        if let bolt = try? BoltReader(bytes: whole) {
            // A snapshot ends in its SHA-256; a data dir's `member/snap/db`
            // does not. A damaged snapshot is refused.
            if hasTrailingHash(whole) { _ = try verified(whole) }
            return try boltStatus(bolt)
        }
        let (bytes, body) = try verified(whole)
        var template = Array("/tmp/swetcd-snapshot-status-XXXXXX".utf8CString)
        guard let dir = mkdtemp(&template) else { throw Failure.write("mkdtemp: \(String(cString: strerror(errno)))") }
        let directory = String(cString: dir)
        let db = directory + "/db"
        defer {
            unlink(db)
            unlink(db + "-lock")
            rmdir(directory)
        }
        try write(bytes, body, to: db)
        do {
            let backend = try LMDBBackend(path: db, mapSize: max(body * 2, 1 << 26), syncOnCommit: false)
            defer { backend.close() }
            let store = try Store(backend: backend)
            return Status(hash: try store.hash(), revision: store.currentRevision, totalKeys: try backend.entryCount(),
                          totalSize: body)
        } catch {
            throw Failure.unreadable("not a swetcd database: \(error)")
        }
    }

    /// `etcdctl snapshot status` of a bbolt file (a snapshot etcd saved,
    /// or an etcd data dir's `member/snap/db`), computed as etcd does:
    /// CRC-32C over each top-level bucket's name and its keys and values in
    /// order; the revision of the `key` bucket's last key; every bucket's
    /// entries; the size the meta gives. (etcd's status does not check the
    /// SHA-256 after it; `status` does, and refuses a damaged snapshot.)
    static func boltStatus(_ bolt: BoltReader) throws -> Status {
        var crc = CRC32C()
        var total = 0
        var revision: Int64 = 0
        do {
            for name in try bolt.bucketNames() {
                crc.update(name)
                let isKeyBucket = name == Array("key".utf8)
                try bolt.forEach(inBucket: [name]) { k, entry in
                    crc.update(Array(k))
                    if case .value(let v) = entry { crc.update(Array(v)) }
                    if isKeyBucket, let main = bigEndianUInt64(k.prefix(8)) { revision = Int64(bitPattern: main) }
                    total += 1
                }
            }
        } catch {
            throw Failure.unreadable("\(error)")
        }
        return Status(hash: crc.value, revision: revision, totalKeys: total, totalSize: Int(bolt.pageCount) * bolt.pageSize)
    }

    /// - Parameter skipHashCheck: as etcd's `--skip-hash-check`: a file
    ///   without the SHA-256 (an etcd data dir's `member/snap/db`) is
    ///   taken whole, and one with it is not checked.
    public static func restore(file: String, dataDir: String, skipHashCheck: Bool = false) throws {
        let bytes: [UInt8], body: Int
        if skipHashCheck {
            bytes = try read(file)
            body = hasTrailingHash(bytes) ? bytes.count - 32 : bytes.count
        } else {
            (bytes, body) = try verified(file)
        }
        try makeDataDir(dataDir)
        if let bolt = try? BoltReader(bytes: bytes) {
            try convert(bolt, to: dataDir + "/member/snap/db")
        } else {
            try write(bytes, body, to: dataDir + "/member/snap/db")
        }
    }

    /// A new data dir whose backend holds what etcd's backend file (an
    /// etcd data dir's `member/snap/db`) holds, as `restore` converts it.
    /// Returns how many voting members etcd's `members` bucket lists.
    @discardableResult
    public static func restore(etcdBackend path: String, dataDir: String) throws -> Int {
        let bolt: BoltReader
        var voters = 0
        do {
            bolt = try BoltReader(bytes: try read(path))
            if try bolt.bucketNames().contains(Array(EtcdBuckets.names.members.utf8)) {
                try bolt.forEach(inBucket: [Array(EtcdBuckets.names.members.utf8)]) { _, entry in
                    if case .value(let json) = entry, !String(decoding: json, as: UTF8.self).contains("\"isLearner\":true") { voters += 1 }
                }
            }
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure.unreadable("\(path): \(error)")
        }
        try makeDataDir(dataDir)
        try convert(bolt, to: dataDir + "/member/snap/db")
        return voters
    }

    /// A data dir's directories, made new (an existing data dir is
    /// never written over).
    static func makeDataDir(_ dataDir: String) throws {
        var st = stat()
        guard stat(dataDir, &st) != 0 else { throw Failure.dataDirExists(dataDir) }
        for dir in [dataDir, dataDir + "/member", dataDir + "/member/snap", dataDir + "/member/wal"] {
            guard mkdir(dir, 0o700) == 0 else { throw Failure.write("mkdir \(dir): \(String(cString: strerror(errno)))") }
        }
    }

    /// Writes a new backend holding what an etcd snapshot holds: every
    /// revision of the `key` bucket (etcd's revision keys and
    /// `mvccpb.KeyValue` values are ours too), the compaction revisions and
    /// consistent index from `meta`, and the leases (etcd's `leasepb.Lease`)
    /// with their TTLs, and the users, roles, permissions and whether auth
    /// is on. Membership comes from the restore's flags, as with etcd's
    /// restore; alarms are not carried (the new cluster raises its own).
    static func convert(_ bolt: BoltReader, to path: String) throws {
        let backend = try LMDBBackend(path: path, mapSize: max(Int(bolt.pageCount) * bolt.pageSize * 2, 1 << 26), syncOnCommit: false)
        defer { backend.close() }
        do {
            let buckets = Set(try bolt.bucketNames().map { String(decoding: $0, as: UTF8.self) })
            guard buckets.contains("key") else { throw Failure.unreadable("an etcd snapshot without a key bucket") }
            try bolt.forEach(inBucket: [Array("key".utf8)]) { k, entry in
                guard case .value(let v) = entry, let key = RevisionKey(bytes: Array(k)) else {
                    throw Failure.unreadable("the key bucket holds \(Array(k)), not a revision")
                }
                try backend.putRevision(key, value: Array(v))
                if backend.uncommittedWrites >= 10_000 { try backend.commit() }
            }
            if buckets.contains("meta") {
                try bolt.forEach(inBucket: [Array("meta".utf8)]) { k, entry in
                    // etcd keeps the compaction revisions as revision keys
                    // (main first) and the consistent index as 8 bytes.
                    guard case .value(let v) = entry, let first = bigEndianUInt64(v.prefix(8)) else { return }
                    let main = Int64(bitPattern: first)
                    switch String(decoding: k, as: UTF8.self) {
                    case "consistent_index": try backend.setMetaInt64(.consistentIndex, main)
                    case "scheduledCompactRev": try backend.setMetaInt64(.scheduledCompactRevision, main)
                    case "finishedCompactRev": try backend.setMetaInt64(.finishedCompactRevision, main)
                    default: break
                    }
                }
            }
            if buckets.contains("lease") {
                try bolt.forEach(inBucket: [Array("lease".utf8)]) { k, entry in
                    guard case .value(let v) = entry, let lease = EtcdBuckets.lease(Array(v)) else {
                        throw Failure.unreadable("the lease bucket holds a value that is not a leasepb.Lease")
                    }
                    try backend.putLease(lease.id, lease.encoded)
                }
            }
            if let store = try etcdAuth(bolt, buckets) { try backend.setMeta(.auth, store.encoded) }
            if buckets.contains(EtcdBuckets.names.v2) {
                try bolt.forEach(inBucket: [Array(EtcdBuckets.names.v2.utf8)]) { k, entry in
                    guard case .value(let v) = entry else { return }
                    if k.elementsEqual(EtcdBuckets.v2IndexKey) {
                        try backend.setMeta(.v2Index, Array(v))
                    } else {
                        try backend.putV2(Array(k), Array(v))
                    }
                }
            }
            try backend.commit()
            try backend.syncer.sync()
        } catch let failure as Failure {
            throw failure
        } catch {
            throw Failure.unreadable("\(error)")
        }
    }

    /// The auth store etcd's `auth`, `authUsers` and `authRoles` buckets
    /// hold; nil when the snapshot has none of them.
    static func etcdAuth(_ bolt: BoltReader, _ buckets: Set<String>) throws -> AuthStore? {
        let names = EtcdBuckets.names
        guard buckets.contains(names.auth) || buckets.contains(names.users) || buckets.contains(names.roles) else { return nil }
        var enabled = false
        var users: [[UInt8]] = [], roles: [[UInt8]] = []
        for (name, visit) in [(names.auth, { (k: [UInt8], v: [UInt8]) in if k == Array("authEnabled".utf8) { enabled = v == [1] } }),
                              (names.users, { users.append($1) }), (names.roles, { roles.append($1) })] where buckets.contains(name) {
            try bolt.forEach(inBucket: [Array(name.utf8)]) { k, entry in
                if case .value(let v) = entry { visit(Array(k), Array(v)) }
            }
        }
        return try EtcdBuckets.authStore(enabled: enabled, users: users, roles: roles)
    }

    /// The first `count` bytes into a new file, synced.
    static func write(_ bytes: [UInt8], _ count: Int, to path: String) throws {
        let f = open(path, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard f >= 0 else { throw Failure.write("\(path): \(String(cString: strerror(errno)))") }
        defer { close(f) }
        let written = bytes.withUnsafeBytes { Glibc.write(f, $0.baseAddress, count) }
        guard written == count, fsync(f) == 0 else { throw Failure.write("\(path): \(String(cString: strerror(errno)))") }
    }

    static func read(_ path: String) throws -> [UInt8] {
        let f = open(path, O_RDONLY)
        guard f >= 0 else { throw Failure.unreadable("\(path): \(String(cString: strerror(errno)))") }
        defer { close(f) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(f, $0.baseAddress, $0.count) }
            if n < 0 { throw Failure.unreadable("\(path): \(String(cString: strerror(errno)))") }
            if n == 0 { return out }
            out.append(contentsOf: chunk[0..<n])
        }
    }
}
