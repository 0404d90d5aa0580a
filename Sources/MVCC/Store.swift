import Checksum

/// The revisioned key-value store: etcd's KV semantics over a `TreeIndex`
/// (which revisions exist) and a `Backend` (what they hold).
///
/// Single-threaded and free of clocks and I/O of its own: its owner calls it
/// in apply order, commits the backend batch (`commit()`), and drives the
/// backend part of compactions (`compactionStep()`).
public final class Store {
    public let backend: any Backend
    public let limits: Limits
    private var index = TreeIndex()

    /// The newest revision: the main revision of the last write.
    public private(set) var currentRevision: Int64 = 1
    /// Reads below this revision fail with `compacted`.
    public private(set) var compactedRevision: Int64 = 0
    /// Whether `leaseID` names a live lease; the lessor sets this. Until one
    /// exists no lease does, and a put with a lease fails as etcd's would.
    public var leaseExists: (Int64) -> Bool = { _ in false }
    /// Called after each write transaction that changed something, with its
    /// revision and its changes in order (the watch hub listens here).
    public var onChange: ((Int64, [WatchEvent]) -> Void)?
    /// False while nobody watches: writes then skip building their events.
    public var recordsChanges = true
    /// Called when a put attaches a key to a lease (the lessor listens).
    /// Puts that drop a key's lease, and deletes, call nothing: the lessor
    /// checks a key's current lease (`lease(of:)`) before acting on it.
    public var onLeaseAttach: (([UInt8], Int64) -> Void)?
    /// Every live key that has a lease, as the backend held them at open
    /// (for the lessor's start); the owner may clear it once read.
    public var leasedKeysAtOpen: [[UInt8]: Int64] = [:]

    /// etcd's mvcc counters, counted as etcd's transaction wrapper counts
    /// them: every range, put and delete (inside transactions too, and
    /// each key of a lease's revocation), and a transaction when it held
    /// more than one of those.
    public struct OperationCounts: Equatable, Sendable {
        public var ranges = 0, puts = 0, deletes = 0, txns = 0
        var total: Int { ranges + puts + deletes }
        public init() {}
    }
    public private(set) var operations = OperationCounts()

    /// The backend part of the newest compaction, when not yet done.
    private var pendingCompaction: PendingCompaction?
    /// The consistent index to write with the next commit.
    private var unwrittenConsistentIndex: UInt64?
    private struct PendingCompaction {
        var revision: Int64
        var keep: Set<Revision>
        var next = Revision(main: 0)
    }

    /// Opens the store over `backend`, rebuilding the index from it and
    /// resuming a compaction that a stop interrupted.
    public init(backend: any Backend, limits: Limits = Limits()) throws {
        self.backend = backend
        self.limits = limits
        try restore()
    }

    /// Rebuilds everything from the backend after its file was replaced
    /// (a snapshot from the leader).
    public func reload() throws {
        index = TreeIndex()
        leasedKeysAtOpen = [:]
        pendingCompaction = nil
        unwrittenConsistentIndex = nil
        compactedRevision = 0
        try restore()
    }

    /// Keys in the index (deleted ones not yet compacted included).
    public var keyCount: Int { index.keyCount }
    /// Keys that exist now (etcd's `etcd_debugging_mvcc_keys_total`).
    public var liveKeyCount: Int { index.liveKeyCount }
    public var hasPendingCompaction: Bool { pendingCompaction != nil }

    // MARK: Reads

    public func range(_ request: RangeRequest) throws -> RangeResult {
        try request.validate()
        defer { backend.endRead() }
        return try range(request, readRevision: currentRevision)
    }

    /// etcd's Range: fetch from the index, filter, sort, then cut at limit.
    private func range(_ r: RangeRequest, readRevision: Int64) throws -> RangeResult {
        operations.ranges += 1
        let rev = r.revision <= 0 ? readRevision : r.revision
        if rev > readRevision { throw MVCCError.futureRevision }
        if rev < compactedRevision { throw MVCCError.compacted }
        let keyRange = KeyRange(key: r.key, rangeEnd: r.rangeEnd)
        if r.countOnly {
            return RangeResult(kvs: [], more: false, count: Int64(index.count(keyRange, atRev: rev)),
                               revision: readRevision)
        }

        // A target other than KEY sorts ascending when no order is given.
        var order = r.sortOrder
        if order == .none && r.sortTarget != .key { order = .ascend }
        // Sorting and filters see every key; otherwise fetch one past the
        // limit to learn whether there is more. (etcd decides this on the
        // order as sent, so a target without an order sorts only the first
        // limit+1 keys there; here it sorts them all.)
        let filters = r.minModRevision != 0 || r.maxModRevision != 0
            || r.minCreateRevision != 0 || r.maxCreateRevision != 0
        var fetch = 0
        if order == .none && !filters && r.limit > 0 { fetch = Int(r.limit) + 1 }
        let (entries, total) = index.range(keyRange, atRev: rev, limit: fetch)

        var kvs: [KeyValue] = []
        kvs.reserveCapacity(entries.count)
        // keys_only still needs values to sort by value.
        let sortsByValue = order != .none && r.sortTarget == .value
        for e in entries {
            guard let kv = try backend.keyValue(at: RevisionKey(e.found.modified),
                                                skipValue: r.keysOnly && !sortsByValue) else {
                preconditionFailure("index has \(e.found.modified) but the backend does not")
            }
            if r.maxModRevision != 0 && kv.modRevision > r.maxModRevision { continue }
            if r.minModRevision != 0 && kv.modRevision < r.minModRevision { continue }
            if r.maxCreateRevision != 0 && kv.createRevision > r.maxCreateRevision { continue }
            if r.minCreateRevision != 0 && kv.createRevision < r.minCreateRevision { continue }
            kvs.append(kv)
        }

        if order != .none { kvs = Self.sorted(kvs, by: r.sortTarget, order) }

        var more = false
        if r.limit > 0 && kvs.count > Int(r.limit) {
            kvs.removeLast(kvs.count - Int(r.limit))
            more = true
        }
        if r.keysOnly && sortsByValue {
            for i in kvs.indices { kvs[i].value = [] }
        }
        return RangeResult(kvs: kvs, more: more, count: Int64(total), revision: readRevision)
    }

    /// Stable: keys that tie on the target stay in key order.
    static func sorted(_ kvs: [KeyValue], by target: RangeRequest.SortTarget,
                       _ order: RangeRequest.SortOrder) -> [KeyValue] {
        func cmp(_ a: KeyValue, _ b: KeyValue) -> Int {
            switch target {
            case .key: return compareBytes(a.key, b.key)
            case .version: return a.version < b.version ? -1 : (a.version > b.version ? 1 : 0)
            case .create: return a.createRevision < b.createRevision ? -1 : (a.createRevision > b.createRevision ? 1 : 0)
            case .mod: return a.modRevision < b.modRevision ? -1 : (a.modRevision > b.modRevision ? 1 : 0)
            case .value: return compareBytes(a.value, b.value)
            }
        }
        let sign = order == .descend ? -1 : 1
        return kvs.enumerated().sorted { x, y in
            let c = cmp(x.element, y.element) * sign
            return c != 0 ? c < 0 : x.offset < y.offset
        }.map(\.element)
    }

    // MARK: Writes

    /// The state of one write transaction: every change gets the main
    /// revision `begin + 1` and the next sub revision; reads inside see the
    /// changes made so far.
    private struct WriteContext {
        let begin: Int64
        var changes = 0
        /// What the transaction changed, in order, for watchers.
        var events: [WatchEvent] = []
        var readRevision: Int64 { changes > 0 ? begin + 1 : begin }
        mutating func nextRevision() -> Revision {
            defer { changes += 1 }
            return Revision(main: begin + 1, sub: Int64(changes))
        }
    }

    public func put(_ request: PutRequest) throws -> PutResult {
        try request.validate()
        try checkPut(request, at: currentRevision, leaseFirst: true)
        return write { try applyPut(request, &$0) }
    }

    public func deleteRange(_ request: DeleteRangeRequest) throws -> DeleteRangeResult {
        try request.validate()
        return write { try applyDelete(request, &$0) }
    }

    /// Deletes `keys` in one revision, skipping those that do not exist
    /// (a lease's revocation: no limit on the number of keys, unlike a txn).
    public func deleteKeys(_ keys: [[UInt8]]) -> DeleteRangeResult {
        let before = operations.total
        defer { if operations.total - before > 1 { operations.txns += 1 } }
        return write { ctx in
            var deleted: Int64 = 0
            for key in keys where !key.isEmpty {
                deleted += try applyDelete(DeleteRangeRequest(key: key), &ctx).deleted
            }
            return DeleteRangeResult(deleted: deleted, prevKVs: [], revision: deleted > 0 ? ctx.begin + 1 : ctx.readRevision)
        }
    }

    /// The lease `key` has now; nil when the key does not exist.
    public func lease(of key: [UInt8]) throws -> Int64? {
        guard let found = index.get(key, atRev: currentRevision) else { return nil }
        defer { backend.endRead() }
        return try backend.keyValue(at: RevisionKey(found.modified), skipValue: true)?.lease
    }

    public func txn(_ request: TxnRequest) throws -> TxnResult {
        try request.validate(maxTxnOps: limits.maxTxnOps)
        // Like etcd: every compare (nested ones too) sees the store as it was
        // before the txn, and every op is checked before anything is written,
        // so a txn either applies whole or not at all.
        let path = try evaluatePath(request, at: currentRevision)
        try check(request, path, at: currentRevision)
        let before = operations.total
        defer { if operations.total - before > 1 { operations.txns += 1 } }
        var result = write { try applyTxn(request, path, &$0) }
        result.revision = currentRevision
        return result
    }

    /// Runs one write transaction and advances the revision if it changed
    /// anything. Errors past validation are backend failures, after which the
    /// index and backend could disagree: those stop the process.
    private func write<R>(_ body: (inout WriteContext) throws -> R) -> R {
        var ctx = WriteContext(begin: currentRevision)
        let result: R
        do {
            result = try body(&ctx)
        } catch {
            fatalError("backend write failed mid-transaction: \(error)")
        }
        if ctx.changes > 0 {
            currentRevision += 1
            onChange?(currentRevision, ctx.events)
        }
        backend.endRead()
        if backend.uncommittedWrites >= limits.backendBatchLimit { try? commit() }
        return result
    }

    /// The checks a put passes before anything is written. etcd checks the
    /// lease first for a lone Put and the key first inside a Txn; so do we.
    private func checkPut(_ p: PutRequest, at rev: Int64, leaseFirst: Bool) throws {
        func checkKey() throws {
            if (p.ignoreValue || p.ignoreLease) && index.get(p.key, atRev: rev) == nil {
                throw MVCCError.keyNotFound
            }
        }
        func checkLease() throws {
            if p.lease != 0 && !leaseExists(p.lease) { throw MVCCError.leaseNotFound }
        }
        if leaseFirst { try checkLease(); try checkKey() } else { try checkKey(); try checkLease() }
    }

    private func applyPut(_ p: PutRequest, _ ctx: inout WriteContext) throws -> PutResult {
        operations.puts += 1
        var prev: KeyValue?
        var created = ctx.begin + 1
        var version: Int64 = 1
        let rev = ctx.nextRevision()
        if let found = index.put(p.key, rev, seenAt: ctx.readRevision) {
            created = found.created.main
            version = found.version + 1
            if p.prevKV || p.ignoreValue || p.ignoreLease {
                prev = try backend.keyValue(at: RevisionKey(found.modified), skipValue: false)
            }
        }
        let kv = KeyValue(key: p.key, createRevision: created, modRevision: rev.main, version: version,
                          value: p.ignoreValue ? prev?.value ?? [] : p.value,
                          lease: p.ignoreLease ? prev?.lease ?? 0 : p.lease)
        try backend.putRevision(RevisionKey(rev), value: kv.encoded())
        if kv.lease != 0 && !p.ignoreLease { onLeaseAttach?(p.key, kv.lease) }
        if onChange != nil && recordsChanges { ctx.events.append(WatchEvent(kind: .put, kv: kv)) }
        return PutResult(prevKV: p.prevKV ? prev : nil, revision: rev.main)
    }

    private func applyDelete(_ d: DeleteRangeRequest, _ ctx: inout WriteContext) throws -> DeleteRangeResult {
        operations.deletes += 1
        let (entries, _) = index.range(KeyRange(key: d.key, rangeEnd: d.rangeEnd), atRev: ctx.readRevision)
        var prevKVs: [KeyValue] = []
        if d.prevKV {
            for e in entries {
                if let kv = try backend.keyValue(at: RevisionKey(e.found.modified), skipValue: false) {
                    prevKVs.append(kv)
                }
            }
        }
        for e in entries {
            let rev = ctx.nextRevision()
            // As etcd: a tombstone's value records only the key.
            try backend.putRevision(RevisionKey(rev, isTombstone: true), value: KeyValue(key: e.key).encoded())
            index.tombstone(e.key, rev)
            if onChange != nil && recordsChanges { ctx.events.append(WatchEvent(kind: .delete, kv: KeyValue(key: e.key, modRevision: rev.main))) }
        }
        let revision = entries.isEmpty ? ctx.readRevision : ctx.begin + 1
        return DeleteRangeResult(deleted: Int64(entries.count), prevKVs: prevKVs, revision: revision)
    }

    // MARK: Txn

    /// Which branch each (nested) txn takes, decided before any write.
    private indirect enum Path {
        case taken(succeeded: Bool, nested: [Path])
    }

    private func evaluatePath(_ t: TxnRequest, at rev: Int64) throws -> Path {
        let succeeded = try t.compare.allSatisfy { try holds($0, at: rev) }
        var nested: [Path] = []
        for case .txn(let inner) in succeeded ? t.success : t.failure {
            nested.append(try evaluatePath(inner, at: rev))
        }
        return .taken(succeeded: succeeded, nested: nested)
    }

    /// etcd's compare: every key of the range must satisfy it; over no keys a
    /// VALUE compare fails and the others compare a zero-valued key.
    private func holds(_ c: Compare, at rev: Int64) throws -> Bool {
        let (entries, _) = index.range(KeyRange(key: c.key, rangeEnd: c.rangeEnd), atRev: rev)
        if entries.isEmpty {
            if case .value = c.target { return false }
            return Self.compare(KeyValue(key: c.key), c)
        }
        var needsValue = false
        if case .value = c.target { needsValue = true }
        for e in entries {
            guard let kv = try backend.keyValue(at: RevisionKey(e.found.modified), skipValue: !needsValue) else {
                preconditionFailure("index has \(e.found.modified) but the backend does not")
            }
            if !Self.compare(kv, c) { return false }
        }
        return true
    }

    static func compare(_ kv: KeyValue, _ c: Compare) -> Bool {
        let order: Int
        switch c.target {
        case .version(let v): order = kv.version < v ? -1 : (kv.version > v ? 1 : 0)
        case .createRevision(let v): order = kv.createRevision < v ? -1 : (kv.createRevision > v ? 1 : 0)
        case .modRevision(let v): order = kv.modRevision < v ? -1 : (kv.modRevision > v ? 1 : 0)
        case .lease(let v): order = kv.lease < v ? -1 : (kv.lease > v ? 1 : 0)
        case .value(let v): order = compareBytes(kv.value, v)
        }
        switch c.result {
        case .equal: return order == 0
        case .notEqual: return order != 0
        case .greater: return order > 0
        case .less: return order < 0
        }
    }

    /// Checks the ops of the taken branches against the store before the txn.
    private func check(_ t: TxnRequest, _ path: Path, at rev: Int64) throws {
        guard case .taken(let succeeded, let nested) = path else { return }
        var nestedPaths = nested.makeIterator()
        for op in succeeded ? t.success : t.failure {
            switch op {
            case .put(let p): try checkPut(p, at: rev, leaseFirst: false)
            case .range(let r):
                if r.revision > 0 && r.revision > rev { throw MVCCError.futureRevision }
                if r.revision > 0 && r.revision < compactedRevision { throw MVCCError.compacted }
            case .deleteRange: break
            case .txn(let inner): try check(inner, nestedPaths.next()!, at: rev)
            }
        }
    }

    private func applyTxn(_ t: TxnRequest, _ path: Path, _ ctx: inout WriteContext) throws -> TxnResult {
        guard case .taken(let succeeded, let nested) = path else { preconditionFailure() }
        var nestedPaths = nested.makeIterator()
        var responses: [ResponseOp] = []
        for op in succeeded ? t.success : t.failure {
            switch op {
            case .range(let r):
                responses.append(.range(try range(r, readRevision: ctx.readRevision)))
            case .put(let p):
                responses.append(.put(try applyPut(p, &ctx)))
            case .deleteRange(let d):
                responses.append(.deleteRange(try applyDelete(d, &ctx)))
            case .txn(let inner):
                var r = try applyTxn(inner, nestedPaths.next()!, &ctx)
                r.revision = ctx.readRevision
                responses.append(.txn(r))
            }
        }
        return TxnResult(succeeded: succeeded, responses: responses, revision: ctx.readRevision)
    }

    // MARK: Compaction

    /// Compacts history at `revision`: reads below it fail from now on. The
    /// index is trimmed at once; the backend's superseded revisions are
    /// deleted by `compactionStep()` in bounded batches.
    public func compact(_ revision: Int64) throws {
        if revision <= compactedRevision { throw MVCCError.compacted }
        if revision > currentRevision { throw MVCCError.futureRevision }
        compactedRevision = revision
        try backend.setMetaInt64(.scheduledCompactRevision, revision)
        // A compaction still under way is covered by this one: whatever it
        // would delete, this one deletes too.
        pendingCompaction = PendingCompaction(revision: revision, keep: index.compact(atRev: revision))
    }

    /// Deletes up to `limits.compactionBatchLimit` superseded revisions.
    /// Returns true when no compaction work is left.
    @discardableResult
    public func compactionStep() throws -> Bool {
        guard var job = pendingCompaction else { return true }
        var doomed: [RevisionKey] = []
        var reachedEnd = true
        try backend.forEachRevision(from: job.next) { key, _ in
            // Changes made at the compaction revision itself stay (deletes
            // included): a watch may start there and must see them.
            if key.revision.main >= job.revision { return false }
            if doomed.count == limits.compactionBatchLimit {
                job.next = key.revision
                reachedEnd = false
                return false
            }
            if !job.keep.contains(key.revision) { doomed.append(key) }
            return true
        }
        backend.endRead()
        for key in doomed { try backend.deleteRevision(key) }
        if reachedEnd {
            try backend.setMetaInt64(.finishedCompactRevision, job.revision)
            pendingCompaction = nil
            return true
        }
        pendingCompaction = job
        return false
    }

    /// Runs the pending compaction to its end, committing each batch.
    public func finishCompaction() throws {
        while try !compactionStep() { try commit() }
        try commit()
    }

    // MARK: History for watchers

    /// The changes of revisions `from...through`, in order, read from the
    /// backend: at most about `maxEvents`, always ending at a revision
    /// boundary (a revision's changes are never split). Returns them and the
    /// first revision not covered. `from` must not be below the compacted
    /// revision.
    public func events(from: Int64, through: Int64, maxEvents: Int, maxBytes: Int = .max) throws -> (events: [WatchEvent], next: Int64) {
        if from < compactedRevision { throw MVCCError.compacted }
        var out: [WatchEvent] = []
        var next = from
        var bytes = 0, stopped = false
        try backend.forEachRevision(from: Revision(main: from)) { key, value in
            let main = key.revision.main
            if main > through { return false }
            if main != next && (out.count >= maxEvents || bytes >= maxBytes) {  // stop between revisions
                stopped = true
                return false
            }
            bytes += value.count
            guard let stored = KeyValue(encoded: value) else {
                preconditionFailure("backend revision \(key.revision) does not decode as mvccpb.KeyValue")
            }
            // From the compacted revision on, every stored revision is a change.
            out.append(key.isTombstone
                ? WatchEvent(kind: .delete, kv: KeyValue(key: stored.key, modRevision: main))
                : WatchEvent(kind: .put, kv: stored))
            next = main
            return true
        }
        backend.endRead()
        // Everything through `next` was read unless we stopped early.
        let covered = out.last.map { $0.revision } ?? (from - 1)
        let end = stopped || out.count >= maxEvents ? covered + 1 : through + 1
        return (out, max(end, from))
    }

    /// The key's version just before `revision` (for a watcher's prev_kv),
    /// nil if it did not exist or that history is compacted.
    public func previousVersion(of key: [UInt8], before revision: Int64) throws -> KeyValue? {
        let at = revision - 1
        guard at >= compactedRevision, at >= 1, let found = index.get(key, atRev: at) else { return nil }
        defer { backend.endRead() }
        return try backend.keyValue(at: RevisionKey(found.modified), skipValue: false)
    }

    // MARK: Hashes

    /// etcd's HashKV (3.4 and 3.5 alike): CRC-32C over the `key` table's
    /// entries up to `revision` (0: the current one): every revision above
    /// the compacted one, and at or below it only each key's revision that
    /// a read at `revision` sees (all of them when no key is alive there).
    /// A revision at or below the compacted one is refused, as etcd does.
    public func hashKV(revision: Int64) throws -> (hash: UInt32, compactRevision: Int64, hashRevision: Int64) {
        let rev = revision <= 0 ? currentRevision : revision
        if rev > currentRevision { throw MVCCError.futureRevision }
        if revision > 0 && rev <= compactedRevision { throw MVCCError.compacted }
        // etcd's `kvindex.Keep(rev)`: for each key alive at `rev`, the
        // revision a read there sees.
        var kept = Set<Revision>()
        if compactedRevision > 0 {
            index.visit(.from([], to: nil), atRev: rev) { _, found in
                kept.insert(found.modified)
                return true
            }
        }
        var crc = CRC32C()
        crc.update(Array("key".utf8))
        try backend.forEachRevision(from: Revision(main: 0)) { key, value in
            if key.revision.main > rev { return false }
            if key.revision.main > compactedRevision || kept.isEmpty || (!key.isTombstone && kept.contains(key.revision)) {
                crc.update(key.bytes)
                crc.update(value)
            }
            return true
        }
        backend.endRead()
        return (crc.value, compactedRevision, rev)
    }

    /// etcd's Hash: CRC-32C over every table of the backend.
    public func hash() throws -> UInt32 {
        var crc = CRC32C()
        try backend.forEachEntry { table, key, value in
            crc.update(Array(table.utf8))
            crc.update(key)
            crc.update(value)
        }
        backend.endRead()
        return crc.value
    }

    // MARK: Backend batches and recovery

    /// Commits the backend's open transaction, with the consistent index
    /// last set, so the index on disk always names the last log entry whose
    /// writes are in the same commit (recovery replays the log after it).
    public func commit() throws {
        if let i = unwrittenConsistentIndex {
            try backend.setMetaInt64(.consistentIndex, Int64(bitPattern: i))
            unwrittenConsistentIndex = nil
        }
        try backend.commit()
    }

    public var consistentIndex: UInt64 {
        get throws {
            if let i = unwrittenConsistentIndex { return i }
            return UInt64(bitPattern: try backend.metaInt64(.consistentIndex) ?? 0)
        }
    }

    /// Names the log entry whose writes come next (set it before applying
    /// them: a commit may happen inside the write once the batch is full).
    public func setConsistentIndex(_ i: UInt64) {
        unwrittenConsistentIndex = i
    }

    /// Rebuilds the index from every revision in the backend, in order.
    private func restore() throws {
        var last: Int64 = 1
        try backend.forEachRevision(from: Revision(main: 0)) { key, bytes in
            guard let kv = KeyValue(encoded: bytes, skipValue: true) else {
                fatalError("backend revision \(key.revision) does not decode as mvccpb.KeyValue")
            }
            index.restore(kv, at: key.revision, isTombstone: key.isTombstone)
            if kv.lease != 0 && !key.isTombstone { leasedKeysAtOpen[kv.key] = kv.lease } else { leasedKeysAtOpen[kv.key] = nil }
            last = key.revision.main
            return true
        }
        backend.endRead()
        let scheduled = try backend.metaInt64(.scheduledCompactRevision) ?? 0
        let finished = try backend.metaInt64(.finishedCompactRevision) ?? 0
        // A compaction may have removed the newest revisions (tombstones).
        currentRevision = max(last, scheduled, 1)
        compactedRevision = scheduled
        if scheduled > finished {
            pendingCompaction = PendingCompaction(revision: scheduled, keep: index.compact(atRev: scheduled))
        } else if scheduled > 0 {
            _ = index.compact(atRev: scheduled)
        }
    }
}
