@testable import MVCC

/// A deliberately naive MVCC store: a full copy of the key space for every
/// revision, and every read a scan of one such copy. It shares no code with
/// the store but `compareBytes` and `prefixRangeEnd`, so the randomized test
/// checks the index, backend and compaction against something obviously right.
struct ReferenceModel {
    typealias State = [[UInt8]: KeyValue]
    var states: [Int64: State] = [1: [:]]
    var current: Int64 = 1
    var compacted: Int64 = 0
    var leases: Set<Int64> = []
    var maxTxnOps = 128
    /// The changes of each revision, in the order the ops made them (what
    /// watchers must receive). Kept across compactions.
    var log: [Int64: [WatchEvent]] = [:]

    func inRange(_ k: [UInt8], key: [UInt8], end: [UInt8]) -> Bool {
        if end.isEmpty { return k == key }
        if compareBytes(k, key) < 0 { return false }
        return end == [0] || compareBytes(k, end) < 0
    }

    func keys(of state: State, key: [UInt8], end: [UInt8]) -> [[UInt8]] {
        state.keys.filter { inRange($0, key: key, end: end) }.sorted { compareBytes($0, $1) < 0 }
    }

    // MARK: operations

    func range(_ r: RangeRequest, state: State, readRev: Int64) throws -> RangeResult {
        if r.key.isEmpty { throw MVCCError.keyNotProvided }
        let rev = r.revision <= 0 ? readRev : r.revision
        if rev > readRev { throw MVCCError.futureRevision }
        if rev < compacted { throw MVCCError.compacted }
        let at = rev == readRev ? state : states[rev]!
        let ks = keys(of: at, key: r.key, end: r.rangeEnd)
        if r.countOnly { return RangeResult(kvs: [], more: false, count: Int64(ks.count), revision: readRev) }
        var kvs = ks.map { at[$0]! }.filter { kv in
            (r.maxModRevision == 0 || kv.modRevision <= r.maxModRevision)
                && (r.minModRevision == 0 || kv.modRevision >= r.minModRevision)
                && (r.maxCreateRevision == 0 || kv.createRevision <= r.maxCreateRevision)
                && (r.minCreateRevision == 0 || kv.createRevision >= r.minCreateRevision)
        }
        var order = r.sortOrder
        if order == .none && r.sortTarget != .key { order = .ascend }
        if order != .none {
            // Insertion sort: stable, and nothing like the store's.
            func less(_ a: KeyValue, _ b: KeyValue) -> Bool {
                let c: Int
                switch r.sortTarget {
                case .key: c = compareBytes(a.key, b.key)
                case .version: c = a.version == b.version ? 0 : (a.version < b.version ? -1 : 1)
                case .create: c = a.createRevision == b.createRevision ? 0 : (a.createRevision < b.createRevision ? -1 : 1)
                case .mod: c = a.modRevision == b.modRevision ? 0 : (a.modRevision < b.modRevision ? -1 : 1)
                case .value: c = compareBytes(a.value, b.value)
                }
                return order == .ascend ? c < 0 : c > 0
            }
            var out: [KeyValue] = []
            for kv in kvs {
                var i = out.count
                while i > 0 && less(kv, out[i - 1]) { i -= 1 }
                out.insert(kv, at: i)
            }
            kvs = out
        }
        var more = false
        if r.limit > 0 && kvs.count > Int(r.limit) { kvs = Array(kvs.prefix(Int(r.limit))); more = true }
        if r.keysOnly { kvs = kvs.map { var kv = $0; kv.value = []; return kv } }
        return RangeResult(kvs: kvs, more: more, count: Int64(ks.count), revision: readRev)
    }

    func range(_ r: RangeRequest) throws -> RangeResult {
        try range(r, state: states[current]!, readRev: current)
    }

    mutating func put(_ p: PutRequest) throws -> PutResult {
        try validate(.put(p))
        let state = states[current]!
        if p.lease != 0 && !leases.contains(p.lease) { throw MVCCError.leaseNotFound }
        if (p.ignoreValue || p.ignoreLease) && state[p.key] == nil { throw MVCCError.keyNotFound }
        var work = Work(state: state, begin: current)
        let r = work.put(p)
        commit(work)
        return r
    }

    mutating func delete(_ d: DeleteRangeRequest) throws -> DeleteRangeResult {
        try validate(.deleteRange(d))
        var work = Work(state: states[current]!, begin: current)
        let r = work.delete(d, model: self)
        commit(work)
        return r
    }

    mutating func txn(_ t: TxnRequest) throws -> TxnResult {
        try validate(.txn(t))
        try checkDuplicates(t.success)
        try checkDuplicates(t.failure)
        let before = states[current]!
        try checkTaken(t, before)
        var work = Work(state: before, begin: current)
        var r = try work.txn(t, before: before, model: self)
        commit(work)
        r.revision = current
        return r
    }

    mutating func compact(_ rev: Int64) throws {
        if rev <= compacted { throw MVCCError.compacted }
        if rev > current { throw MVCCError.futureRevision }
        for r in states.keys where r < rev { states[r] = nil }
        compacted = rev
    }

    private mutating func commit(_ work: Work) {
        if work.changes > 0 {
            current += 1
            states[current] = work.state
            log[current] = work.events
        }
    }

    // MARK: checks

    func validate(_ op: RequestOp) throws {
        switch op {
        case .range(let r): if r.key.isEmpty { throw MVCCError.keyNotProvided }
        case .put(let p):
            if p.key.isEmpty { throw MVCCError.keyNotProvided }
            if p.ignoreValue && !p.value.isEmpty { throw MVCCError.valueProvided }
            if p.ignoreLease && p.lease != 0 { throw MVCCError.leaseProvided }
        case .deleteRange(let d): if d.key.isEmpty { throw MVCCError.keyNotProvided }
        case .txn(let t):
            if t.compare.count > maxTxnOps || t.success.count > maxTxnOps || t.failure.count > maxTxnOps {
                throw MVCCError.tooManyOperations
            }
            if t.compare.contains(where: { $0.key.isEmpty }) { throw MVCCError.keyNotProvided }
            for op in t.success + t.failure { try validate(op) }
        }
    }

    /// Every key a branch could put, nested branches included, must be put
    /// once and lie outside every range it could delete.
    func checkDuplicates(_ ops: [RequestOp]) throws {
        func collect(_ ops: [RequestOp]) throws -> (puts: Set<[UInt8]>, dels: [(key: [UInt8], end: [UInt8])]) {
            var puts = Set<[UInt8]>()
            var dels: [(key: [UInt8], end: [UInt8])] = []
            for op in ops { if case .deleteRange(let d) = op { dels.append((d.key, d.rangeEnd)) } }
            func deleted(_ k: [UInt8]) -> Bool { dels.contains { inRange(k, key: $0.key, end: $0.end) } }
            for op in ops {
                guard case .txn(let t) = op else { continue }
                let a = try collect(t.success), b = try collect(t.failure)
                for k in a.puts {
                    if puts.contains(k) || deleted(k) { throw MVCCError.duplicateKey }
                    puts.insert(k)
                }
                for k in b.puts {
                    if (puts.contains(k) && !a.puts.contains(k)) || deleted(k) { throw MVCCError.duplicateKey }
                    puts.insert(k)
                }
                dels += a.dels + b.dels
            }
            for op in ops {
                guard case .put(let p) = op else { continue }
                if puts.contains(p.key) || deleted(p.key) { throw MVCCError.duplicateKey }
                puts.insert(p.key)
            }
            return (puts, dels)
        }
        _ = try collect(ops)
    }

    func holds(_ c: Compare, _ state: State) -> Bool {
        let ks = keys(of: state, key: c.key, end: c.rangeEnd)
        if ks.isEmpty {
            if case .value = c.target { return false }
            return Store.compare(KeyValue(key: c.key), c)
        }
        return ks.allSatisfy { Store.compare(state[$0]!, c) }
    }

    func checkTaken(_ t: TxnRequest, _ before: State) throws {
        let ok = t.compare.allSatisfy { holds($0, before) }
        for op in ok ? t.success : t.failure {
            switch op {
            case .put(let p):
                if (p.ignoreValue || p.ignoreLease) && before[p.key] == nil { throw MVCCError.keyNotFound }
                if p.lease != 0 && !leases.contains(p.lease) { throw MVCCError.leaseNotFound }
            case .range(let r):
                if r.revision > 0 && r.revision > current { throw MVCCError.futureRevision }
                if r.revision > 0 && r.revision < compacted { throw MVCCError.compacted }
            case .deleteRange: break
            case .txn(let inner): try checkTaken(inner, before)
            }
        }
    }

    /// One write transaction in progress.
    struct Work {
        var state: State
        let begin: Int64
        var changes = 0
        var events: [WatchEvent] = []
        var readRev: Int64 { changes > 0 ? begin + 1 : begin }

        mutating func put(_ p: PutRequest) -> PutResult {
            let old = state[p.key]
            state[p.key] = KeyValue(key: p.key, createRevision: old?.createRevision ?? begin + 1,
                                    modRevision: begin + 1, version: (old?.version ?? 0) + 1,
                                    value: p.ignoreValue ? old!.value : p.value,
                                    lease: p.ignoreLease ? old!.lease : p.lease)
            changes += 1
            events.append(WatchEvent(kind: .put, kv: state[p.key]!))
            return PutResult(prevKV: p.prevKV ? old : nil, revision: begin + 1)
        }

        mutating func delete(_ d: DeleteRangeRequest, model: ReferenceModel) -> DeleteRangeResult {
            let ks = model.keys(of: state, key: d.key, end: d.rangeEnd)
            let prev = d.prevKV ? ks.map { state[$0]! } : []
            for k in ks {
                state[k] = nil
                events.append(WatchEvent(kind: .delete, kv: KeyValue(key: k, modRevision: begin + 1)))
            }
            changes += ks.count
            return DeleteRangeResult(deleted: Int64(ks.count), prevKVs: prev, revision: ks.isEmpty ? readRev : begin + 1)
        }

        mutating func txn(_ t: TxnRequest, before: State, model: ReferenceModel) throws -> TxnResult {
            let ok = t.compare.allSatisfy { model.holds($0, before) }
            var responses: [ResponseOp] = []
            for op in ok ? t.success : t.failure {
                switch op {
                case .range(let r): responses.append(.range(try model.range(r, state: state, readRev: readRev)))
                case .put(let p): responses.append(.put(put(p)))
                case .deleteRange(let d): responses.append(.deleteRange(delete(d, model: model)))
                case .txn(let inner):
                    var r = try txn(inner, before: before, model: model)
                    r.revision = readRev
                    responses.append(.txn(r))
                }
            }
            return TxnResult(succeeded: ok, responses: responses, revision: readRev)
        }
    }
}
