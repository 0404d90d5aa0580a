import Testing
@testable import MVCC

/// Random operations against the store and the reference model, every
/// response compared; then the store is reopened from disk and compared
/// again. A failure names its seed: rerun with SWETCD_SEED=<seed>.
@Suite struct StoreModelTests {
    static let operations = 10_000

    @Test func randomOperationsMatchTheReferenceModel() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let dir = TemporaryDirectory()
        defer { dir.remove() }

        var limits = Limits()
        limits.maxTxnOps = 8
        limits.backendBatchLimit = 97      // commit often, at odd points
        limits.compactionBatchLimit = 5    // many small compaction steps
        var model = ReferenceModel()
        model.maxTxnOps = limits.maxTxnOps
        model.leases = [100, 200]
        var store = try Store(backend: LMDBBackend(path: dir.database, mapSize: 1 << 20), limits: limits)
        store.leaseExists = { [100, 200].contains($0) }
        var gen = OperationGenerator()
        var tally: [String: Int] = [:]  // outcome kind -> count

        func fail(_ step: Int, _ what: String) {
            Issue.record("seed \(seed) (SWETCD_SEED=\(seed)), step \(step): \(what)")
        }

        for step in 0..<Self.operations {
            let op = gen.next(&rng, current: model.current, compacted: model.compacted)
            let mine = Outcome { try store.apply(op) }
            let theirs = Outcome { try model.apply(op) }
            tally[theirs.kind, default: 0] += 1
            if mine != theirs {
                fail(step, "\(op)\n store: \(mine)\n model: \(theirs)")
                return
            }
            if store.currentRevision != model.current || store.compactedRevision != model.compacted {
                fail(step, "revisions: store \(store.currentRevision)/\(store.compactedRevision), model \(model.current)/\(model.compacted)")
                return
            }
            if store.liveKeyCount != model.states[model.current]!.count {
                fail(step, "live keys: store \(store.liveKeyCount), model \(model.states[model.current]!.count)")
                return
            }
            // Let background compaction interleave with writes.
            if rng.next() % 4 == 0 { try store.compactionStep() }
        }

        // Reopen twice: once with a compaction possibly half done, then after
        // finishing it; the history must read the same each time.
        for finish in [false, true] {
            if finish { try store.finishCompaction() }
            try store.commit()
            (store.backend as? LMDBBackend)?.close()
            store = try Store(backend: LMDBBackend(path: dir.database), limits: limits)
            store.leaseExists = { [100, 200].contains($0) }
            #expect(store.currentRevision == model.current, "seed \(seed)")
            #expect(store.compactedRevision == model.compacted, "seed \(seed)")
            #expect(store.liveKeyCount == model.states[model.current]!.count, "seed \(seed): live keys after reopen")
            for rev in max(model.compacted, 1)...model.current {
                var everything = RangeRequest(key: [0], rangeEnd: [0])
                everything.revision = rev
                let mine = Outcome { try store.range(everything) }
                let theirs = Outcome { try model.range(everything) }
                if mine != theirs {
                    fail(-1, "after reopen (finished compaction: \(finish)), revision \(rev):\n store: \(mine)\n model: \(theirs)")
                    return
                }
            }
        }
        if store.hasPendingCompaction { fail(-1, "compaction still pending after finishCompaction") }

        // The run must have reached every kind of result and every error the
        // generator aims at, or it proved less than it claims.
        let expected = ["range", "put", "delete", "txn", "done"]
            + ["compacted", "futureRevision", "duplicateKey", "keyNotFound", "keyNotProvided",
               "leaseNotFound", "leaseProvided", "valueProvided", "tooManyOperations"].map { "error \($0)" }
        for kind in expected where tally[kind, default: 0] == 0 {
            fail(-1, "no operation ended in \(kind): \(tally)")
        }
    }
}

/// An operation of the randomized test.
enum Operation: CustomStringConvertible {
    case range(RangeRequest)
    case put(PutRequest)
    case delete(DeleteRangeRequest)
    case txn(TxnRequest)
    case compact(Int64)

    var description: String {
        switch self {
        case .range(let r): return "range \(r)"
        case .put(let p): return "put \(p)"
        case .delete(let d): return "delete \(d)"
        case .txn(let t): return "txn \(t)"
        case .compact(let r): return "compact \(r)"
        }
    }
}

enum Outcome: Equatable, CustomStringConvertible {
    case range(RangeResult), put(PutResult), delete(DeleteRangeResult), txn(TxnResult), done
    case failed(MVCCError)

    init(_ body: () throws -> Outcome) {
        do { self = try body() } catch let e as MVCCError { self = .failed(e) } catch {
            fatalError("unexpected error \(error)")
        }
    }

    init(_ body: () throws -> RangeResult) {
        self.init { () throws -> Outcome in .range(try body()) }
    }

    var kind: String {
        switch self {
        case .range: return "range"
        case .put: return "put"
        case .delete: return "delete"
        case .txn: return "txn"
        case .done: return "done"
        case .failed(let e): return "error \(e)"
        }
    }

    var description: String {
        switch self {
        case .range(let r): return "\(r)"
        case .put(let r): return "\(r)"
        case .delete(let r): return "\(r)"
        case .txn(let r): return "\(r)"
        case .done: return "done"
        case .failed(let e): return "error \(e)"
        }
    }
}

extension Store {
    func apply(_ op: Operation) throws -> Outcome {
        switch op {
        case .range(let r): return .range(try range(r))
        case .put(let p): return .put(try put(p))
        case .delete(let d): return .delete(try deleteRange(d))
        case .txn(let t): return .txn(try txn(t))
        case .compact(let rev): try compact(rev); return .done
        }
    }
}

extension ReferenceModel {
    mutating func apply(_ op: Operation) throws -> Outcome {
        switch op {
        case .range(let r): return .range(try range(r))
        case .put(let p): return .put(try put(p))
        case .delete(let d): return .delete(try delete(d))
        case .txn(let t): return .txn(try txn(t))
        case .compact(let rev): try compact(rev); return .done
        }
    }
}

/// Random requests over a few shared prefixes, so ranges, deletes and
/// compares keep meeting each other's keys.
struct OperationGenerator {
    let keys: [[UInt8]] = {
        var ks: [[UInt8]] = []
        for p in ["a/", "b/", "b/x/", "c"] { for i in 0..<6 { ks.append(Array((p + String(i)).utf8)) } }
        ks.append([0xff, 0xfe])
        return ks
    }()

    func pick<T>(_ xs: [T], _ rng: inout SeededRandom) -> T { xs[Int(rng.next() % UInt64(xs.count))] }
    func chance(_ percent: UInt64, _ rng: inout SeededRandom) -> Bool { rng.next() % 100 < percent }
    func int(_ range: ClosedRange<Int64>, _ rng: inout SeededRandom) -> Int64 { Int64.random(in: range, using: &rng) }

    func key(_ rng: inout SeededRandom) -> [UInt8] {
        chance(1, &rng) ? [] : pick(keys, &rng)
    }

    /// (key, range_end) as a single key, a prefix, from-key, or an interval.
    func keyRange(_ rng: inout SeededRandom) -> ([UInt8], [UInt8]) {
        let k = key(&rng)
        switch rng.next() % 6 {
        case 0, 1: return (k, [])
        case 2: return (Array(k.prefix(Int(rng.next() % 3) + 1)), prefixRangeEnd(Array(k.prefix(Int(rng.next() % 3) + 1))))
        case 3: return (k, [0])
        default: return (k, pick(keys, &rng))
        }
    }

    func value(_ rng: inout SeededRandom) -> [UInt8] {
        chance(5, &rng) ? [] : Array("v\(rng.next() % 50)".utf8)
    }

    func revision(_ rng: inout SeededRandom, current: Int64, compacted: Int64) -> Int64 {
        if chance(50, &rng) { return 0 }
        return int(max(compacted - 2, 0)...(current + 2), &rng)
    }

    func range(_ rng: inout SeededRandom, current: Int64, compacted: Int64) -> RangeRequest {
        let (k, e) = keyRange(&rng)
        var r = RangeRequest(key: k, rangeEnd: e)
        if chance(40, &rng) { r.limit = int(-1...5, &rng) }
        r.revision = revision(&rng, current: current, compacted: compacted)
        if chance(40, &rng) { r.sortOrder = pick([.none, .ascend, .descend], &rng) }
        if chance(40, &rng) { r.sortTarget = pick([.key, .version, .create, .mod, .value], &rng) }
        r.keysOnly = chance(15, &rng)
        r.countOnly = chance(10, &rng)
        if chance(15, &rng) { r.minModRevision = int(0...current, &rng) }
        if chance(15, &rng) { r.maxModRevision = int(0...current, &rng) }
        if chance(15, &rng) { r.minCreateRevision = int(0...current, &rng) }
        if chance(15, &rng) { r.maxCreateRevision = int(0...current, &rng) }
        return r
    }

    func put(_ rng: inout SeededRandom) -> PutRequest {
        var p = PutRequest(key: key(&rng), value: value(&rng))
        if chance(20, &rng) { p.lease = pick([100, 200, 300], &rng) }
        p.prevKV = chance(30, &rng)
        if chance(8, &rng) { p.ignoreValue = true; if chance(80, &rng) { p.value = [] } }
        if chance(8, &rng) { p.ignoreLease = true; if chance(80, &rng) { p.lease = 0 } }
        return p
    }

    func delete(_ rng: inout SeededRandom) -> DeleteRangeRequest {
        let (k, e) = keyRange(&rng)
        return DeleteRangeRequest(key: k, rangeEnd: e, prevKV: chance(40, &rng))
    }

    func compare(_ rng: inout SeededRandom, current: Int64) -> Compare {
        let (k, e) = chance(80, &rng) ? (key(&rng), [UInt8]()) : keyRange(&rng)
        let target: Compare.Target
        switch rng.next() % 5 {
        case 0: target = .version(int(0...3, &rng))
        case 1: target = .createRevision(int(0...current, &rng))
        case 2: target = .modRevision(int(0...current, &rng))
        case 3: target = .value(value(&rng))
        default: target = .lease(pick([0, 100, 200], &rng))
        }
        return Compare(key: k, rangeEnd: e, target: target,
                       result: pick([.equal, .greater, .less, .notEqual], &rng))
    }

    func ops(_ rng: inout SeededRandom, current: Int64, compacted: Int64, depth: Int) -> [RequestOp] {
        let count = chance(2, &rng) ? 9 : Int(rng.next() % 4)
        return (0..<count).map { _ in
            switch rng.next() % 10 {
            case 0, 1, 2: return .put(put(&rng))
            case 3, 4: return .deleteRange(delete(&rng))
            case 5, 6, 7: return .range(range(&rng, current: current, compacted: compacted))
            default:
                return depth < 2 ? .txn(txn(&rng, current: current, compacted: compacted, depth: depth + 1))
                                 : .range(range(&rng, current: current, compacted: compacted))
            }
        }
    }

    func txn(_ rng: inout SeededRandom, current: Int64, compacted: Int64, depth: Int = 0) -> TxnRequest {
        TxnRequest(compare: (0..<Int(rng.next() % 3)).map { _ in compare(&rng, current: current) },
                   success: ops(&rng, current: current, compacted: compacted, depth: depth),
                   failure: ops(&rng, current: current, compacted: compacted, depth: depth))
    }

    mutating func next(_ rng: inout SeededRandom, current: Int64, compacted: Int64) -> Operation {
        switch rng.next() % 100 {
        case 0..<30: return .put(put(&rng))
        case 30..<40: return .delete(delete(&rng))
        case 40..<70: return .range(range(&rng, current: current, compacted: compacted))
        case 70..<97: return .txn(txn(&rng, current: current, compacted: compacted))
        default:
            // Mostly inside the history, so that a window of it stays readable.
            let upper = chance(10, &rng) ? current + 1 : compacted + (current - compacted) / 3 + 1
            return .compact(int(max(compacted - 1, 0)...upper, &rng))
        }
    }
}
