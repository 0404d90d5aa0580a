import CLMDB
import Metrics
#if canImport(Glibc)
import Glibc
#endif

/// An LMDB error, with LMDB's own description.
public struct LMDBError: Error, CustomStringConvertible {
    public let code: Int32
    public let operation: String
    public var description: String {
        "lmdb \(operation): \(String(cString: mdb_strerror(code))) (\(code))"
    }
}

@inline(__always)
private func check(_ rc: Int32, _ operation: String) throws {
    if rc != 0 { throw LMDBError(code: rc, operation: operation) }
}

/// The backend on LMDB: one file (plus its `-lock` file) holding the tables
/// `key` (revision key → `mvccpb.KeyValue` bytes) and `meta`.
///
/// Writes go into one open write transaction until `commit()`. Reads use that
/// transaction when one is open (so they see uncommitted writes), otherwise a
/// read transaction that is renewed on first use and reset by `endRead()`.
/// Everything here belongs to one thread, the store's.
///
/// The map (LMDB's address-space reservation) starts at `mapSize` and doubles
/// when full: the failed batch is replayed from `uncommitted` into a fresh
/// transaction, so a full map never fails a write.
public final class LMDBBackend: Backend {
    private var env: OpaquePointer?
    private var keyTable: MDB_dbi = 0
    private var metaTable: MDB_dbi = 0
    private var leaseTable: MDB_dbi = 0
    private var v2Table: MDB_dbi = 0
    private var layout = RevisionLayout(pageSize: 4096)
    /// Writes large values whole, as before parts existed (for tests of
    /// stores written then).
    var writesLargeValuesWhole: Bool {
        get { !layout.splitsLargeValues }
        set { layout.splitsLargeValues = !newValue }
    }
    private var writeTxn: OpaquePointer?
    private var readTxn: OpaquePointer?
    private var readTxnIsLive = false
    public let path: String
    public private(set) var mapSize: Int

    /// The named tables, each an MDB_dbi of its environment.
    fileprivate struct Tables {
        var key: MDB_dbi = 0
        var meta: MDB_dbi = 0
        var lease: MDB_dbi = 0
        var v2: MDB_dbi = 0
        var layout = RevisionLayout(pageSize: 4096)
    }
    private enum Table { case meta, lease, v2 }

    private enum Write {
        case put(table: Table, key: [UInt8], value: [UInt8])
        case delete(table: Table, key: [UInt8])
        // Revision keys are kept as the struct and encoded on the stack:
        // no array per write.
        case putRevision(RevisionKey, value: [UInt8])
        case deleteRevision(RevisionKey)
    }
    /// The writes of the open transaction, kept to replay after map growth.
    private var uncommitted: [Write] = []
    public var uncommittedWrites: Int { uncommitted.count }

    /// Opens (creating if needed) the database file at `path`.
    /// - Parameter syncOnCommit: fsync at every commit; off when a WAL
    ///   provides durability and syncs the backend itself.
    public init(path: String, mapSize: Int = 1 << 31, syncOnCommit: Bool = true) throws {
        self.path = path
        self.mapSize = mapSize
        self.syncOnCommit = syncOnCommit
        unlink(path + ".retired")  // left by a defragment the process did not outlive
        try open(mapSize: mapSize)
    }

    private let syncOnCommit: Bool

    private func open(mapSize: Int) throws {
        try check(mdb_env_create(&env), "env_create")
        do {
            try check(mdb_env_set_maxdbs(env, 16), "env_set_maxdbs")
            try check(mdb_env_set_mapsize(env, mapSize), "env_set_mapsize")
            // NOTLS: read transactions belong to their handle, not the thread,
            // so a read handle can sit beside the write transaction.
            var flags = UInt32(MDB_NOSUBDIR) | UInt32(MDB_NOTLS)
            if !syncOnCommit { flags |= UInt32(MDB_NOSYNC) }
            try check(mdb_env_open(env, path, flags, 0o644), "env_open \(path)")
            var info = MDB_envinfo()
            mdb_env_info(env, &info)
            self.mapSize = info.me_mapsize
            var stat = MDB_stat()
            mdb_env_stat(env, &stat)
            pageSize = Int(stat.ms_psize)

            var txn: OpaquePointer?
            try check(mdb_txn_begin(env, nil, 0, &txn), "txn_begin")
            do {
                let tables = try Self.openTables(txn!)
                (keyTable, metaTable, leaseTable, v2Table) = (tables.key, tables.meta, tables.lease, tables.v2)
                layout = tables.layout
                try check(mdb_txn_commit(txn), "txn_commit")
            } catch {
                mdb_txn_abort(txn)
                throw error
            }
        } catch {
            mdb_env_close(env)
            env = nil
            throw error
        }
    }

    deinit { close() }

    /// Aborts uncommitted writes and closes the file.
    public func close() {
        guard let env else { return }
        if let writeTxn { mdb_txn_abort(writeTxn) }
        if let readTxn { mdb_txn_abort(readTxn) }
        writeTxn = nil
        readTxn = nil
        uncommitted.removeAll()
        mdb_env_close(env)
        self.env = nil
    }

    fileprivate static func openTables(_ txn: OpaquePointer) throws -> Tables {
        var t = Tables()
        var stat = MDB_stat()
        mdb_env_stat(mdb_txn_env(txn), &stat)
        t.layout = RevisionLayout(pageSize: Int(stat.ms_psize))
        try check(mdb_dbi_open(txn, "key", UInt32(MDB_CREATE), &t.key), "dbi_open key")
        try check(mdb_dbi_open(txn, "meta", UInt32(MDB_CREATE), &t.meta), "dbi_open meta")
        try check(mdb_dbi_open(txn, "lease", UInt32(MDB_CREATE), &t.lease), "dbi_open lease")
        try check(mdb_dbi_open(txn, "v2", UInt32(MDB_CREATE), &t.v2), "dbi_open v2")
        return t
    }

    // MARK: Transactions

    private func openWriteTxn() throws -> OpaquePointer {
        if let writeTxn { return writeTxn }
        var txn: OpaquePointer?
        try check(mdb_txn_begin(env, nil, 0, &txn), "txn_begin")
        writeTxn = txn
        return txn!
    }

    private func readView() throws -> OpaquePointer {
        if let writeTxn { return writeTxn }
        if let readTxn {
            if !readTxnIsLive { try check(mdb_txn_renew(readTxn), "txn_renew"); readTxnIsLive = true }
            return readTxn
        }
        var txn: OpaquePointer?
        try check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn), "txn_begin read")
        readTxn = txn
        readTxnIsLive = true
        return txn!
    }

    public func endRead() {
        if let readTxn, readTxnIsLive {
            mdb_txn_reset(readTxn)
            readTxnIsLive = false
        }
    }

    /// etcd's `etcd_disk_backend_commit_duration_seconds`: each commit of
    /// a batch of applied writes.
    public let commitDurations = Histogram(bounds: Histogram.exponentialBuckets(start: 0.001, factor: 2, count: 14))

    public func commit() throws {
        guard let txn = writeTxn else { return }
        writeTxn = nil
        let rc = commitDurations.time { mdb_txn_commit(txn) }
        if rc == MDB_MAP_FULL {
            try growAndReplay()
            return try commit()
        }
        if rc != MDB_SUCCESS {
            // LMDB freed the transaction: rebuild it so that reads still see
            // every applied write and a later commit can try again.
            let failure = LMDBError(code: rc, operation: "txn_commit")
            try replayUncommitted()
            throw failure
        }
        uncommitted.removeAll(keepingCapacity: true)
    }

    /// Doubles the map and rebuilds the open transaction from `uncommitted`.
    private func growAndReplay() throws {
        if let writeTxn { mdb_txn_abort(writeTxn) }
        writeTxn = nil
        if let readTxn { mdb_txn_abort(readTxn) }  // no transaction may be open
        readTxn = nil
        readTxnIsLive = false
        mapSize *= 2
        try check(mdb_env_set_mapsize(env, mapSize), "env_set_mapsize")
        try replayUncommitted()
    }

    /// Opens a write transaction holding every uncommitted write again.
    private func replayUncommitted() throws {
        let txn = try openWriteTxn()
        for write in uncommitted {
            let rc = perform(write, in: txn)
            if rc == MDB_MAP_FULL { return try growAndReplay() }
            if rc != MDB_NOTFOUND { try check(rc, "replay") }
        }
    }

    // MARK: Writes

    private static func put(_ txn: OpaquePointer, _ table: MDB_dbi, _ k: UnsafeRawBufferPointer, _ v: UnsafeRawBufferPointer,
                            appending: Bool = false) -> Int32 {
        var mk = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
        var mv = MDB_val(mv_size: v.count, mv_data: UnsafeMutableRawPointer(mutating: v.baseAddress))
        if appending {
            let rc = mdb_put(txn, table, &mk, &mv, UInt32(MDB_APPEND))
            if rc != MDB_KEYEXIST { return rc }
            // Not after the last key (a replay, a restore): an ordinary put.
        }
        return mdb_put(txn, table, &mk, &mv, 0)
    }

    /// The key of a part of the revision whose key is `key`, on the stack
    /// for the duration of `body`, which sets the part number.
    private static func withPartKey<R>(_ key: UnsafeRawBufferPointer,
                                       _ body: (_ setPart: (UInt8) -> Void, UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try withUnsafeTemporaryAllocation(of: UInt8.self, capacity: RevisionLayout.partKeySize) { buffer in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: key[..<RevisionKey.size]))
            return try body({ raw[RevisionKey.size] = $0 }, UnsafeRawBufferPointer(raw))
        }
    }

    /// Puts a revision's value, whole or in parts (`RevisionLayout`), each
    /// appended.
    private static func putRevision(_ txn: OpaquePointer, _ table: MDB_dbi, _ layout: RevisionLayout,
                                    _ key: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer) -> Int32 {
        if layout.storesWhole(value.count, tombstone: key.count != RevisionKey.size) {
            return put(txn, table, key, value, appending: true)
        }
        // A store written before parts existed may hold this revision
        // whole, and a log replay write it again.
        let rc = delete(txn, table, key)
        guard rc == MDB_SUCCESS || rc == MDB_NOTFOUND else { return rc }
        return withPartKey(key) { setPart, partKey in
            for (i, range) in layout.parts(of: value.count).enumerated() {
                setPart(UInt8(i))
                let rc = put(txn, table, partKey, UnsafeRawBufferPointer(rebasing: value[range]), appending: true)
                if rc != MDB_SUCCESS { return rc }
            }
            return MDB_SUCCESS
        }
    }

    /// Deletes a revision, whole or in parts; MDB_NOTFOUND if neither.
    private static func deleteRevision(_ txn: OpaquePointer, _ table: MDB_dbi, _ key: UnsafeRawBufferPointer) -> Int32 {
        let rc = delete(txn, table, key)
        guard rc == MDB_NOTFOUND, key.count == RevisionKey.size else { return rc }
        return withPartKey(key) { setPart, partKey in
            for part in 0..<RevisionLayout.maxParts {
                setPart(UInt8(part))
                let rc = delete(txn, table, partKey)
                if rc == MDB_NOTFOUND { return part == 0 ? MDB_NOTFOUND : MDB_SUCCESS }
                if rc != MDB_SUCCESS { return rc }
            }
            return MDB_SUCCESS
        }
    }

    private static func delete(_ txn: OpaquePointer, _ table: MDB_dbi, _ k: UnsafeRawBufferPointer) -> Int32 {
        var mk = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
        return mdb_del(txn, table, &mk, nil)
    }

    private func perform(_ w: Write, in txn: OpaquePointer) -> Int32 {
        Self.perform(w, in: txn, Tables(key: keyTable, meta: metaTable, lease: leaseTable, v2: v2Table, layout: layout))
    }

    private static func perform(_ w: Write, in txn: OpaquePointer, _ tables: Tables) -> Int32 {
        func dbi(_ t: Table) -> MDB_dbi {
            switch t {
            case .meta: return tables.meta
            case .lease: return tables.lease
            case .v2: return tables.v2
            }
        }
        switch w {
        case .put(let table, let key, let value):
            return key.withUnsafeBytes { k in value.withUnsafeBytes { put(txn, dbi(table), k, $0) } }
        case .delete(let table, let key): return key.withUnsafeBytes { delete(txn, dbi(table), $0) }
        // Revision keys arrive in order: appended, a page split keeps the
        // full page full instead of halving it (pages of 1 KiB values held
        // two, not three).
        case .putRevision(let key, let value):
            return key.withUnsafeBytes { k in value.withUnsafeBytes { putRevision(txn, tables.key, tables.layout, k, $0) } }
        case .deleteRevision(let key): return key.withUnsafeBytes { deleteRevision(txn, tables.key, $0) }
        }
    }

    private func write(_ w: Write) throws {
        let txn = try openWriteTxn()
        uncommitted.append(w)
        defragJournal?.append(w)
        let rc = perform(w, in: txn)
        if rc == MDB_MAP_FULL { return try growAndReplay() }
        if rc == MDB_NOTFOUND { return }  // deleting what is not there
        try check(rc, "write")
    }

    /// Bytes of revision values put since the backend opened (what the
    /// next sync has to write, roughly).
    public private(set) var revisionBytesPut = 0

    public func putRevision(_ key: RevisionKey, value: [UInt8]) throws {
        revisionBytesPut &+= value.count
        try write(.putRevision(key, value: value))
    }

    public func deleteRevision(_ key: RevisionKey) throws {
        try write(.deleteRevision(key))
    }

    public func setMeta(_ name: MetaKey, _ value: [UInt8]) throws {
        try write(.put(table: .meta, key: name.bytes, value: value))
    }

    public func putLease(_ id: Int64, _ value: [UInt8]) throws {
        try write(.put(table: .lease, key: leaseKey(id), value: value))
    }

    public func deleteLease(_ id: Int64) throws {
        try write(.delete(table: .lease, key: leaseKey(id)))
    }

    public func putV2(_ key: [UInt8], _ value: [UInt8]) throws {
        try write(.put(table: .v2, key: key, value: value))
    }

    public func deleteV2(_ key: [UInt8]) throws {
        try write(.delete(table: .v2, key: key))
    }

    // MARK: Reads

    private func get<R>(_ table: MDB_dbi, _ key: [UInt8], _ body: (UnsafeRawBufferPointer) -> R) throws -> R? {
        let txn = try readView()
        return try key.withUnsafeBytes { try Self.get(txn, table, $0).map(body) }
    }

    fileprivate static func get(_ txn: OpaquePointer, _ table: MDB_dbi, _ k: UnsafeRawBufferPointer) throws -> UnsafeRawBufferPointer? {
        var mk = MDB_val(mv_size: k.count, mv_data: UnsafeMutableRawPointer(mutating: k.baseAddress))
        var mv = MDB_val()
        let rc = mdb_get(txn, table, &mk, &mv)
        if rc == MDB_NOTFOUND { return nil }
        try check(rc, "get")
        return UnsafeRawBufferPointer(start: mv.mv_data, count: mv.mv_size)
    }

    public func keyValue(at key: RevisionKey, skipValue: Bool) throws -> KeyValue? {
        let txn = try readView()
        return try key.withUnsafeBytes { k -> KeyValue? in
            if let whole = try Self.get(txn, keyTable, k) { return KeyValue(encoded: whole, skipValue: skipValue) }
            guard !key.isTombstone else { return nil }
            // Stored in parts, or not at all: one search for the first
            // part, then its neighbours.
            var found: KeyValue?
            try Self.walkRevisions(keyTable, in: txn, from: k) { revision, value in
                if revision.elementsEqual(k) { found = KeyValue(encoded: value, skipValue: skipValue) }
                return false
            }
            return found
        }
    }

    public func meta(_ name: MetaKey) throws -> [UInt8]? {
        try get(metaTable, name.bytes) { Array($0) }
    }

    public func forEachRevision(from start: Revision,
                                _ body: (RevisionKey, UnsafeRawBufferPointer) throws -> Bool) throws {
        let txn = try readView()
        try RevisionKey(start).withUnsafeBytes { s in
            try Self.walkRevisions(keyTable, in: txn, from: s) { k, v in
                guard let revKey = RevisionKey(bytes: k) else {
                    throw LMDBError(code: MDB_CORRUPTED, operation: "revision key of \(k.count) bytes")
                }
                return try body(revKey, v)
            }
        }
    }

    /// Visits the revisions of the `key` table in order, as `walk`, with
    /// each revision stored in parts put together: its key, its value.
    fileprivate static func walkRevisions(_ table: MDB_dbi, in txn: OpaquePointer, from start: UnsafeRawBufferPointer? = nil,
                                      _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool) throws {
        var partsKey: [UInt8] = []
        var partsValue: [UInt8] = []
        var gathering = false
        func visitGathered() throws -> Bool {
            gathering = false
            return try partsKey.withUnsafeBytes { k in try partsValue.withUnsafeBytes { try body(k, $0) } }
        }
        try walk(table, in: txn, from: start) { k, v in
            let isPart = RevisionLayout.isPartKey(k)
            if isPart, gathering, k[RevisionKey.size] != 0, k.prefix(RevisionKey.size).elementsEqual(partsKey) {
                partsValue.append(contentsOf: v)
                return true
            }
            if gathering, try !visitGathered() { return false }
            guard isPart else { return try body(k, v) }
            guard k[RevisionKey.size] == 0 else {
                throw LMDBError(code: MDB_CORRUPTED, operation: "part \(k[RevisionKey.size]) of a revision without its first part")
            }
            partsKey = Array(k.prefix(RevisionKey.size))
            partsValue = Array(v)
            gathering = true
            return true
        }
        if gathering { _ = try visitGathered() }
    }

    /// Visits the entries of `table` in key order, from the first key at or
    /// after `start` (or the first), until `body` returns false.
    fileprivate static func walk(_ table: MDB_dbi, in txn: OpaquePointer, from start: UnsafeRawBufferPointer? = nil,
                             _ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Bool) throws {
        var cursor: OpaquePointer?
        try check(mdb_cursor_open(txn, table, &cursor), "cursor_open")
        defer { mdb_cursor_close(cursor) }
        var mk = MDB_val(), mv = MDB_val()
        if let start { mk = MDB_val(mv_size: start.count, mv_data: UnsafeMutableRawPointer(mutating: start.baseAddress)) }
        var rc = mdb_cursor_get(cursor, &mk, &mv, start == nil ? MDB_FIRST : MDB_SET_RANGE)
        while rc == 0 {
            let goOn = try body(UnsafeRawBufferPointer(start: mk.mv_data, count: mk.mv_size),
                                UnsafeRawBufferPointer(start: mv.mv_data, count: mv.mv_size))
            if !goOn { return }
            rc = mdb_cursor_get(cursor, &mk, &mv, MDB_NEXT)
        }
        if rc != MDB_NOTFOUND { try check(rc, "cursor_get") }
    }

    public func forEachLease(_ body: (Int64, [UInt8]) throws -> Void) throws {
        try Self.walk(leaseTable, in: try readView()) { k, v in
            guard let id = leaseID(fromKey: k) else {
                throw LMDBError(code: MDB_CORRUPTED, operation: "lease key of \(k.count) bytes")
            }
            try body(id, Array(v))
            return true
        }
    }

    public func forEachV2(_ body: ([UInt8]) throws -> Void) throws {
        try Self.walk(v2Table, in: try readView()) { _, v in
            try body(Array(v))
            return true
        }
    }

    public func forEachEntry(_ body: (String, UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) throws {
        let txn = try readView()
        // Revisions as one entry each, however stored: the hash is the
        // same for every layout.
        try Self.walkRevisions(keyTable, in: txn) { k, v in
            try body("key", k, v)
            return true
        }
        for (name, table) in [("meta", metaTable), ("lease", leaseTable), ("v2", v2Table)] {
            try Self.walk(table, in: txn) { k, v in
                try body(name, k, v)
                return true
            }
        }
    }

    // MARK: Copies

    /// A handle that copies the committed database from another thread
    /// (LMDB's copy runs in its own read transaction). Valid while this
    /// backend stays open and is not defragmented.
    public struct Copier: @unchecked Sendable {
        fileprivate let env: OpaquePointer?

        /// Writes a compacted copy of the committed state to `path`.
        public func copy(to path: String) throws {
            try check(mdb_env_copy2(env, path, UInt32(MDB_CP_COMPACT)), "env_copy2 \(path)")
        }

        /// Calls `body` with the committed state as of now, read in one
        /// transaction on the calling thread (any thread): what a snapshot
        /// is built from while writes go on.
        public func read<R>(_ body: (CommittedState) throws -> R) throws -> R {
            var txn: OpaquePointer?
            try check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn), "txn_begin read")
            defer { mdb_txn_abort(txn) }
            return try body(CommittedState(txn: txn!, tables: try LMDBBackend.openTables(txn!)))
        }

        /// Writes the committed state into a new database at `path` entry
        /// by entry, appending in key order, so that every page is filled
        /// (a page copy keeps each page as full as it was: a store written
        /// before revisions were appended stays at half-full pages).
        /// Commits and syncs every `syncBytes` of entries, so that the
        /// writeback of a large copy never queues ahead of other fsyncs.
        public func rebuild(to path: String, syncBytes: Int) throws {
            var target: OpaquePointer?
            try check(mdb_env_create(&target), "env_create \(path)")
            defer { mdb_env_close(target) }
            var info = MDB_envinfo()
            mdb_env_info(env, &info)
            var mapSize = info.me_mapsize
            try check(mdb_env_set_maxdbs(target, 16), "env_set_maxdbs \(path)")
            try check(mdb_env_set_mapsize(target, mapSize), "env_set_mapsize \(path)")
            try check(mdb_env_open(target, path, UInt32(MDB_NOSUBDIR) | UInt32(MDB_NOTLS) | UInt32(MDB_NOSYNC), 0o644),
                      "env_open \(path)")
            var source: OpaquePointer?
            try check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &source), "txn_begin rebuild")
            defer { mdb_txn_abort(source) }
            let from = try LMDBBackend.openTables(source!)
            let tables: [KeyPath<Tables, MDB_dbi>] = [\.key, \.meta, \.lease, \.v2]
            // Where the next batch starts: a table, and the key after which
            // it goes on (nil: from the first).
            var table = 0
            var resumeAfter: [UInt8]? = nil
            while table < tables.count {
                var txn: OpaquePointer?
                try check(mdb_txn_begin(target, nil, 0, &txn), "txn_begin \(path)")
                var batchBytes = 0
                var rc: Int32 = MDB_SUCCESS
                var batchEnd: (table: Int, after: [UInt8]?) = (table, resumeAfter)
                do {
                    let to = try LMDBBackend.openTables(txn!)
                    tableLoop: for t in table..<tables.count {
                        let start = t == table ? resumeAfter : nil
                        var lastKey: [UInt8]? = start
                        let full = try (start ?? []).withUnsafeBytes { s -> Bool in
                            var reachedLimit = false
                            // Revisions are read whole and written in the
                            // current layout (a store from before parts
                            // existed is converted here).
                            let isKeyTable = tables[t] == \.key
                            let walk = isKeyTable ? LMDBBackend.walkRevisions : LMDBBackend.walk
                            try walk(from[keyPath: tables[t]], source!, start == nil ? nil : s) { k, v in
                                if let start, k.elementsEqual(start) { return true }
                                rc = isKeyTable ? LMDBBackend.putRevision(txn!, to.key, to.layout, k, v)
                                                : LMDBBackend.put(txn!, to[keyPath: tables[t]], k, v, appending: true)
                                if rc != MDB_SUCCESS { return false }
                                batchBytes += k.count + v.count
                                reachedLimit = batchBytes >= syncBytes
                                if reachedLimit { lastKey = Array(k) }
                                return !reachedLimit
                            }
                            return reachedLimit
                        }
                        if rc != MDB_SUCCESS { break tableLoop }
                        if full {
                            batchEnd = (t, lastKey)
                            break tableLoop
                        }
                        batchEnd = (t + 1, nil)
                    }
                } catch {
                    mdb_txn_abort(txn)
                    throw error
                }
                if rc == MDB_SUCCESS { rc = mdb_txn_commit(txn) } else { mdb_txn_abort(txn) }
                if rc == MDB_MAP_FULL {
                    mapSize *= 2
                    try check(mdb_env_set_mapsize(target, mapSize), "env_set_mapsize \(path)")
                    continue  // the same batch again
                }
                try check(rc, "rebuild \(path)")
                try check(mdb_env_sync(target, 1), "env_sync \(path)")
                (table, resumeAfter) = batchEnd
            }
        }
    }

    public var copier: Copier { Copier(env: env) }

    /// The committed state in one read transaction (`Copier.read`).
    public struct CommittedState {
        fileprivate let txn: OpaquePointer
        fileprivate let tables: Tables

        /// Every revision in key order, each stored in parts put together:
        /// its encoded revision key and its `KeyValue` bytes.
        public func forEachRevision(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) throws {
            try LMDBBackend.walkRevisions(tables.key, in: txn) { k, v in
                try body(k, v)
                return true
            }
        }

        public func forEachLease(_ body: (Int64, [UInt8]) throws -> Void) throws {
            try LMDBBackend.walk(tables.lease, in: txn) { k, v in
                guard let id = leaseID(fromKey: k) else {
                    throw LMDBError(code: MDB_CORRUPTED, operation: "lease key of \(k.count) bytes")
                }
                try body(id, Array(v))
                return true
            }
        }

        /// The same revisions as `forEachRevision` with their values' sizes
        /// only: a revision in parts is summed, not put together.
        public func forEachRevisionSize(_ body: (UnsafeRawBufferPointer, Int) throws -> Void) throws {
            var parts: (key: [UInt8], size: Int)?
            func visitParts() throws {
                if let p = parts { try p.key.withUnsafeBytes { try body($0, p.size) } }
                parts = nil
            }
            try LMDBBackend.walk(tables.key, in: txn) { k, v in
                guard RevisionLayout.isPartKey(k) else {
                    try visitParts()
                    try body(k, v.count)
                    return true
                }
                if k[RevisionKey.size] != 0, let p = parts, k.prefix(RevisionKey.size).elementsEqual(p.key) {
                    parts!.size += v.count
                    return true
                }
                try visitParts()
                guard k[RevisionKey.size] == 0 else {
                    throw LMDBError(code: MDB_CORRUPTED, operation: "part \(k[RevisionKey.size]) of a revision without its first part")
                }
                parts = (Array(k.prefix(RevisionKey.size)), v.count)
                return true
            }
            try visitParts()
        }

        /// The v2 store's nodes: each backend key and encoded node.
        public func forEachV2(_ body: (UnsafeRawBufferPointer, UnsafeRawBufferPointer) throws -> Void) throws {
            try LMDBBackend.walk(tables.v2, in: txn) { k, v in
                try body(k, v)
                return true
            }
        }

        public func meta(_ name: MetaKey) throws -> [UInt8]? {
            try name.bytes.withUnsafeBytes { k in try LMDBBackend.get(txn, tables.meta, k).map { Array($0) } }
        }

        public func metaInt64(_ name: MetaKey) throws -> Int64? {
            try meta(name).flatMap(bigEndianUInt64).map { Int64(bitPattern: $0) }
        }
    }

    /// A handle that fsyncs the committed state from another thread (the
    /// backend commits without fsync; a checkpoint makes it durable). Valid
    /// while this backend stays open and is not defragmented.
    public struct Syncer: @unchecked Sendable {
        fileprivate let env: OpaquePointer?
        public func sync() throws { try check(mdb_env_sync(env, 1), "env_sync") }
    }

    public var syncer: Syncer { Syncer(env: env) }

    // MARK: Online defragmentation

    /// Every write since `beginDefragment`, still to be replayed into the
    /// compacted copy; nil when no defragmentation runs.
    private var defragJournal: [Write]?
    /// The copy, opened once it is written.
    private var defragCopy: (env: OpaquePointer, tables: Tables)?

    /// Where a defragmentation writes the compacted copy.
    public var defragmentTarget: String { path + ".defrag" }
    public var isDefragmenting: Bool { defragJournal != nil }
    /// Writes made since the defragmentation began and not yet replayed.
    public var defragmentBacklog: Int { defragJournal?.count ?? 0 }

    /// Starts a defragmentation that writes go on through: commits, then
    /// records every later write. The caller writes `defragmentTarget` with
    /// the returned copier's `rebuild` on another thread, then calls
    /// `catchUpDefragment` until little is left and `finishDefragment`.
    /// (The copy may already hold some journaled writes: replaying a put or
    /// a delete again leaves the same state.)
    public func beginDefragment() throws -> Copier {
        precondition(defragJournal == nil, "one defragmentation at a time")
        try commit()
        unlink(defragmentTarget)
        unlink(defragmentTarget + "-lock")
        defragJournal = []
        return copier
    }

    /// Replays up to `limit` journaled writes into the copy (opening it the
    /// first time) in one transaction; returns how many remain.
    public func catchUpDefragment(limit: Int) throws -> Int {
        guard var journal = defragJournal else { return 0 }
        let copy = try defragCopy ?? openCopy()
        defragCopy = copy
        let n = min(limit, journal.count)
        guard n > 0 else { return 0 }
        while true {
            var txn: OpaquePointer?
            try check(mdb_txn_begin(copy.env, nil, 0, &txn), "txn_begin copy")
            var rc: Int32 = MDB_SUCCESS
            for w in journal[..<n] {
                rc = Self.perform(w, in: txn!, copy.tables)
                if rc == MDB_NOTFOUND { rc = MDB_SUCCESS }
                if rc != MDB_SUCCESS { break }
            }
            if rc == MDB_SUCCESS { rc = mdb_txn_commit(txn) } else { mdb_txn_abort(txn) }
            if rc == MDB_MAP_FULL {
                var info = MDB_envinfo()
                mdb_env_info(copy.env, &info)
                try check(mdb_env_set_mapsize(copy.env, info.me_mapsize * 2), "env_set_mapsize copy")
                continue
            }
            try check(rc, "replay into the defragmented copy")
            break
        }
        journal.removeFirst(n)
        defragJournal = journal
        return journal.count
    }

    private func openCopy() throws -> (env: OpaquePointer, tables: Tables) {
        var env: OpaquePointer?
        try check(mdb_env_create(&env), "env_create copy")
        do {
            try check(mdb_env_set_maxdbs(env, 16), "env_set_maxdbs copy")
            try check(mdb_env_set_mapsize(env, mapSize), "env_set_mapsize copy")
            try check(mdb_env_open(env, defragmentTarget, UInt32(MDB_NOSUBDIR) | UInt32(MDB_NOTLS) | UInt32(MDB_NOSYNC), 0o644),
                      "env_open \(defragmentTarget)")
            var txn: OpaquePointer?
            try check(mdb_txn_begin(env, nil, 0, &txn), "txn_begin copy")
            do {
                let tables = try Self.openTables(txn!)
                try check(mdb_txn_commit(txn), "txn_commit copy")
                return (env!, tables)
            } catch {
                mdb_txn_abort(txn)
                throw error
            }
        } catch {
            mdb_env_close(env)
            throw error
        }
    }

    /// Syncs the copy from another thread (while the loop goes on replaying
    /// into it), so that the swap has little left to sync. Nil until the
    /// first catch-up opened the copy.
    public var defragmentCopySyncer: Syncer? { defragCopy.map { Syncer(env: $0.env) } }

    /// Swaps the copy in: commits, replays what is left, syncs the copy,
    /// replaces the file with it and reopens. Writes wait for this part
    /// only; call it when the backlog is small, and with no other thread
    /// using this backend (copies, syncs).
    public func finishDefragment() throws {
        try commit()
        _ = try catchUpDefragment(limit: .max)
        guard let copy = defragCopy ?? (try? openCopy()) else { throw LMDBError(code: MDB_PANIC, operation: "open the defragmented copy") }
        defragCopy = nil
        defragJournal = nil
        let synced = mdb_env_sync(copy.env, 1)
        mdb_env_close(copy.env)
        try check(synced, "env_sync copy")
        try swapIn(defragmentTarget)
        unlink(defragmentTarget + "-lock")
    }

    /// Closes the environment, renames `file` over the database and opens
    /// it again (the old file reopened if the rename fails, which throws).
    private func swapIn(_ file: String) throws {
        endRead()
        if let readTxn { mdb_txn_abort(readTxn) }
        readTxn = nil
        let size = mapSize
        mdb_env_close(env)
        env = nil
        // The old file keeps a second name through the rename: renaming over
        // its last name would free its blocks right here (a quarter second
        // per GB on ext4). The caller removes `retiredFile` off the loop.
        unlink(retiredFile)
        _ = link(path, retiredFile)
        guard rename(file, path) == 0 else {
            let failure = LMDBError(code: errno, operation: "rename \(file)")
            unlink(retiredFile)
            try open(mapSize: size)
            throw failure
        }
        try open(mapSize: size)
    }

    /// Replaces the database with the file at `file` (another member's,
    /// written and synced by the caller): uncommitted writes are dropped,
    /// the file is renamed into place and opened. No other thread may use
    /// this backend meanwhile (copies, syncs, a defragment).
    public func replace(with file: String) throws {
        precondition(defragJournal == nil, "replace during a defragmentation")
        if let writeTxn { mdb_txn_abort(writeTxn) }
        writeTxn = nil
        uncommitted.removeAll()
        try swapIn(file)
    }

    /// The replaced file after a defragment, for the caller to delete on
    /// another thread (also removed when the backend next opens).
    public var retiredFile: String { path + ".retired" }

    /// Gives up a defragmentation: the copy is removed, the file untouched.
    public func abortDefragment() {
        if let copy = defragCopy { mdb_env_close(copy.env) }
        defragCopy = nil
        defragJournal = nil
        unlink(defragmentTarget)
        unlink(defragmentTarget + "-lock")
    }

    // MARK: Size

    /// Bytes of the database file on disk.
    public var fileSize: Int {
        var st = stat()
        return stat(path, &st) == 0 ? Int(st.st_size) : 0
    }

    /// Bytes of the file that hold data: the high-water mark less the pages
    /// on LMDB's free list (which later writes reuse; a defragment returns
    /// them to the disk). etcd's `dbSizeInUse`.
    public var sizeInUse: Int {
        let free = (try? freePages()) ?? 0
        return max(highWaterMark - free * pageSize, 0)
    }

    /// Entries in every table (revisions, meta, leases): a snapshot's
    /// "total keys", as etcd counts every bucket's keys.
    public func entryCount() throws -> Int {
        var txn: OpaquePointer?
        try check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn), "txn_begin count")
        defer { mdb_txn_abort(txn) }
        var total = 0
        for dbi in [metaTable, leaseTable, v2Table] {
            var st = MDB_stat()
            try check(mdb_stat(txn, dbi, &st), "stat")
            total += Int(st.ms_entries)
        }
        // A revision stored in parts counts once: its first part.
        try Self.walk(keyTable, in: txn!) { k, _ in
            if !RevisionLayout.isPartKey(k) || k[RevisionKey.size] == 0 { total += 1 }
            return true
        }
        return total
    }

    /// LMDB's page size, read once the file is open.
    private var pageSize = 4096

    /// Pages on the free list: the sum of the page-number lists stored in
    /// LMDB's free table (dbi 0), each led by its length.
    private func freePages() throws -> Int {
        // Its own read transaction: LMDB opens no cursor on the free table
        // inside a write transaction.
        var txn: OpaquePointer?
        try check(mdb_txn_begin(env, nil, UInt32(MDB_RDONLY), &txn), "txn_begin free")
        defer { mdb_txn_abort(txn) }
        var total = 0
        try Self.walk(0, in: txn!) { _, v in
            if v.count >= MemoryLayout<Int>.size { total += v.loadUnaligned(as: Int.self) }
            return true
        }
        return total
    }

    /// Bytes of the database file the map has used (LMDB's high-water mark).
    /// (Asked before every write that may grow the file: the quota check.)
    public var highWaterMark: Int {
        var info = MDB_envinfo()
        mdb_env_info(env, &info)
        return (info.me_last_pgno + 1) * pageSize
    }
}
