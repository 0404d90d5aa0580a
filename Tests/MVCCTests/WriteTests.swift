import Testing
@testable import MVCC

@Suite struct PutAndDeleteTests {
    @Test func putCreatesThenVersionsAKey() throws {
        let s = try Store(backend: MemoryBackend())
        #expect(try s.put(PutRequest(key: bytes("k"), value: bytes("1"))).revision == 2)
        var p = PutRequest(key: bytes("k"), value: bytes("2"))
        p.prevKV = true
        let second = try s.put(p)
        #expect(second.revision == 3)
        #expect(second.prevKV == KeyValue(key: bytes("k"), createRevision: 2, modRevision: 2, version: 1, value: bytes("1")))
        let kv = try s.range(RangeRequest(key: bytes("k"))).kvs[0]
        #expect(kv == KeyValue(key: bytes("k"), createRevision: 2, modRevision: 3, version: 2, value: bytes("2")))
    }

    @Test func putAfterDeleteStartsANewGeneration() throws {
        let s = try Store(backend: MemoryBackend())
        _ = try s.put(PutRequest(key: bytes("k"), value: bytes("1")))
        _ = try s.deleteRange(DeleteRangeRequest(key: bytes("k")))
        _ = try s.put(PutRequest(key: bytes("k"), value: bytes("2")))
        let kv = try s.range(RangeRequest(key: bytes("k"))).kvs[0]
        #expect(kv.createRevision == 4 && kv.version == 1)
    }

    @Test func ignoreValueAndIgnoreLeaseKeepTheCurrentOnes() throws {
        let s = try Store(backend: MemoryBackend())
        s.leaseExists = { $0 == 7 || $0 == 8 }
        _ = try s.put(PutRequest(key: bytes("k"), value: bytes("v"), lease: 7))
        var keepValue = PutRequest(key: bytes("k"), value: [], lease: 8)
        keepValue.ignoreValue = true
        _ = try s.put(keepValue)
        var kv = try s.range(RangeRequest(key: bytes("k"))).kvs[0]
        #expect(kv.value == bytes("v") && kv.lease == 8)
        var keepLease = PutRequest(key: bytes("k"), value: bytes("w"))
        keepLease.ignoreLease = true
        _ = try s.put(keepLease)
        kv = try s.range(RangeRequest(key: bytes("k"))).kvs[0]
        #expect(kv.value == bytes("w") && kv.lease == 8)
    }

    @Test func putErrors() throws {
        let s = try Store(backend: MemoryBackend())
        s.leaseExists = { $0 == 7 }
        #expect(throws: MVCCError.keyNotProvided) { try s.put(PutRequest(key: [], value: bytes("v"))) }
        var p = PutRequest(key: bytes("k"), value: bytes("v"))
        p.ignoreValue = true
        #expect(throws: MVCCError.valueProvided) { try s.put(p) }
        p = PutRequest(key: bytes("k"), value: [], lease: 7)
        p.ignoreLease = true
        #expect(throws: MVCCError.leaseProvided) { try s.put(p) }
        p = PutRequest(key: bytes("k"), value: [])
        p.ignoreValue = true
        #expect(throws: MVCCError.keyNotFound) { try s.put(p) }
        #expect(throws: MVCCError.leaseNotFound) { try s.put(PutRequest(key: bytes("k"), value: [], lease: 9)) }
        #expect(s.currentRevision == 1, "failed puts change nothing")
    }

    @Test func aLonePutChecksTheLeaseFirstATxnTheKey() throws {
        let s = try Store(backend: MemoryBackend())
        var p = PutRequest(key: bytes("missing"), value: [], lease: 9)
        p.ignoreValue = true
        #expect(throws: MVCCError.leaseNotFound) { try s.put(p) }
        #expect(throws: MVCCError.keyNotFound) { try s.txn(TxnRequest(success: [.put(p)])) }
    }

    @Test func deleteRangeCountsAndReturnsPrevious() throws {
        let s = try Store(backend: MemoryBackend())
        for k in ["p/1", "p/2", "q"] { _ = try s.put(PutRequest(key: bytes(k), value: bytes(k))) }
        let d = try s.deleteRange(DeleteRangeRequest(key: bytes("p/"), rangeEnd: prefixRangeEnd(bytes("p/")), prevKV: true))
        #expect(d.deleted == 2 && d.revision == 5)
        #expect(d.prevKVs.map(\.key) == [bytes("p/1"), bytes("p/2")])
        #expect(try s.range(RangeRequest(key: bytes("p/1"))).kvs.isEmpty)
        // Both deletes share one main revision (sub 0 and 1).
        var old = RangeRequest(key: bytes("p/"), rangeEnd: prefixRangeEnd(bytes("p/")))
        old.revision = 4
        #expect(try s.range(old).count == 2)
    }

    @Test func deletingNothingKeepsTheRevision() throws {
        let s = try Store(backend: MemoryBackend())
        _ = try s.put(PutRequest(key: bytes("k"), value: bytes("v")))
        let d = try s.deleteRange(DeleteRangeRequest(key: bytes("nope")))
        #expect(d.deleted == 0 && d.revision == 2 && s.currentRevision == 2)
        #expect(throws: MVCCError.keyNotProvided) { try s.deleteRange(DeleteRangeRequest(key: [])) }
    }
}

@Suite struct TxnTests {
    /// k: create 2, mod 3, version 2, value "v2", lease 7.
    static func store() throws -> Store {
        let s = try Store(backend: MemoryBackend())
        s.leaseExists = { $0 == 7 }
        _ = try s.put(PutRequest(key: bytes("k"), value: bytes("v1")))
        _ = try s.put(PutRequest(key: bytes("k"), value: bytes("v2"), lease: 7))
        return s
    }

    static func holds(_ target: Compare.Target, _ result: Compare.Result, key: String = "k") throws -> Bool {
        let t = TxnRequest(compare: [Compare(key: bytes(key), target: target, result: result)])
        return try store().txn(t).succeeded
    }

    /// Each target with each result, below, at and above the key's value.
    @Test func everyCompareTargetAndResult() throws {
        let cases: [(String, (Int64) -> Compare.Target, Int64)] = [
            ("version", { .version($0) }, 2),
            ("create", { .createRevision($0) }, 2),
            ("mod", { .modRevision($0) }, 3),
            ("lease", { .lease($0) }, 7),
        ]
        for (name, target, actual) in cases {
            for (operand, equal, greater, less) in [(actual - 1, false, true, false),
                                                    (actual, true, false, false),
                                                    (actual + 1, false, false, true)] {
                #expect(try Self.holds(target(operand), .equal) == equal, "\(name) = \(operand)")
                #expect(try Self.holds(target(operand), .notEqual) == !equal, "\(name) != \(operand)")
                #expect(try Self.holds(target(operand), .greater) == greater, "\(name) > \(operand)")
                #expect(try Self.holds(target(operand), .less) == less, "\(name) < \(operand)")
            }
        }
        #expect(try Self.holds(.value(bytes("v2")), .equal))
        #expect(try Self.holds(.value(bytes("v1")), .greater))
        #expect(try Self.holds(.value(bytes("v3")), .less))
        #expect(try Self.holds(.value(bytes("v3")), .notEqual))
    }

    @Test func comparesOnAMissingKey() throws {
        #expect(try Self.holds(.version(0), .equal, key: "missing"))
        #expect(try Self.holds(.createRevision(0), .equal, key: "missing"))
        #expect(try !Self.holds(.value([]), .equal, key: "missing"), "a value compare on no key fails")
    }

    @Test func compareOverARangeNeedsEveryKey() throws {
        let s = try Self.store()
        _ = try s.put(PutRequest(key: bytes("k2"), value: bytes("v2")))
        let all = Compare(key: bytes("k"), rangeEnd: bytes("l"), target: .value(bytes("v2")), result: .equal)
        #expect(try s.txn(TxnRequest(compare: [all])).succeeded)
        let versions = Compare(key: bytes("k"), rangeEnd: bytes("l"), target: .version(2), result: .equal)
        #expect(try !s.txn(TxnRequest(compare: [versions])).succeeded)
    }

    @Test func branchesRunInOneRevision() throws {
        let s = try Self.store()
        let t = TxnRequest(
            compare: [Compare(key: bytes("k"), target: .version(2), result: .equal)],
            success: [.put(PutRequest(key: bytes("a"), value: bytes("1"))),
                      .put(PutRequest(key: bytes("b"), value: bytes("2"))),
                      .range(RangeRequest(key: bytes("a")))],
            failure: [.deleteRange(DeleteRangeRequest(key: bytes("k")))])
        let r = try s.txn(t)
        #expect(r.succeeded && r.revision == 4)
        guard case .range(let seen) = r.responses[2] else { Issue.record("not a range"); return }
        #expect(seen.kvs.map(\.value) == [bytes("1")], "a txn reads its own writes")
        let a = try s.range(RangeRequest(key: bytes("a"))).kvs[0]
        let b = try s.range(RangeRequest(key: bytes("b"))).kvs[0]
        #expect(a.modRevision == 4 && b.modRevision == 4)

        let failed = try s.txn(TxnRequest(compare: [Compare(key: bytes("k"), target: .version(9), result: .equal)],
                                          success: [], failure: [.deleteRange(DeleteRangeRequest(key: bytes("k")))]))
        #expect(!failed.succeeded && failed.revision == 5)
        #expect(try s.range(RangeRequest(key: bytes("k"))).kvs.isEmpty)
    }

    @Test func readOnlyTxnKeepsTheRevision() throws {
        let s = try Self.store()
        let r = try s.txn(TxnRequest(success: [.range(RangeRequest(key: bytes("k")))]))
        #expect(r.revision == 3 && s.currentRevision == 3)
    }

    @Test func nestedTxnComparesSeeTheStoreBeforeTheTxn() throws {
        let s = try Self.store()
        let inner = TxnRequest(compare: [Compare(key: bytes("k"), target: .value(bytes("v2")), result: .equal)],
                               success: [.put(PutRequest(key: bytes("inner"), value: bytes("yes")))],
                               failure: [.put(PutRequest(key: bytes("inner"), value: bytes("no")))])
        let outer = TxnRequest(success: [.put(PutRequest(key: bytes("k"), value: bytes("changed"))), .txn(inner)])
        let r = try s.txn(outer)
        #expect(r.succeeded && r.revision == 4)
        #expect(try s.range(RangeRequest(key: bytes("inner"))).kvs[0].value == bytes("yes"))
    }

    @Test func aFailingCheckAppliesNothing() throws {
        let s = try Self.store()
        var ignore = PutRequest(key: bytes("missing"), value: [])
        ignore.ignoreValue = true
        let t = TxnRequest(success: [.put(PutRequest(key: bytes("x"), value: bytes("1"))), .put(ignore)])
        #expect(throws: MVCCError.keyNotFound) { try s.txn(t) }
        #expect(s.currentRevision == 3)
        #expect(try s.range(RangeRequest(key: bytes("x"))).kvs.isEmpty)
        var old = RangeRequest(key: bytes("k"))
        old.revision = 9
        #expect(throws: MVCCError.futureRevision) { try s.txn(TxnRequest(success: [.range(old)])) }
    }

    @Test func duplicateKeyRules() throws {
        let s = try Self.store()
        func put(_ k: String) -> RequestOp { .put(PutRequest(key: bytes(k), value: bytes("v"))) }
        func del(_ k: String, _ e: String = "") -> RequestOp { .deleteRange(DeleteRangeRequest(key: bytes(k), rangeEnd: bytes(e))) }
        #expect(throws: MVCCError.duplicateKey) { try s.txn(TxnRequest(success: [put("a"), put("a")])) }
        #expect(throws: MVCCError.duplicateKey) { try s.txn(TxnRequest(success: [put("b"), del("a", "c")])) }
        #expect(throws: MVCCError.duplicateKey) {
            try s.txn(TxnRequest(success: [put("a"), .txn(TxnRequest(success: [put("a")]))]))
        }
        // Allowed: overlapping deletes; the same key in both branches of a
        // nested txn; the same key in success and failure of one txn.
        _ = try s.txn(TxnRequest(success: [del("a", "c"), del("b")]))
        _ = try s.txn(TxnRequest(success: [.txn(TxnRequest(success: [put("a")], failure: [put("a")]))]))
        _ = try s.txn(TxnRequest(success: [put("a")], failure: [put("a")]))
    }

    @Test func tooManyOperations() throws {
        var limits = Limits()
        limits.maxTxnOps = 2
        let s = try Store(backend: MemoryBackend(), limits: limits)
        let three = (0..<3).map { RequestOp.range(RangeRequest(key: bytes("k\($0)"))) }
        #expect(throws: MVCCError.tooManyOperations) { try s.txn(TxnRequest(success: three)) }
        #expect(throws: MVCCError.tooManyOperations) { try s.txn(TxnRequest(failure: three)) }
        let nested = TxnRequest(success: [.txn(TxnRequest(success: three))])
        #expect(throws: MVCCError.tooManyOperations) { try s.txn(nested) }
        _ = try s.txn(TxnRequest(success: Array(three.prefix(2))))
        #expect(throws: MVCCError.keyNotProvided) {
            try s.txn(TxnRequest(compare: [Compare(key: [], target: .version(0), result: .equal)]))
        }
    }
}
