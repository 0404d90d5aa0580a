import Testing
@testable import MVCC

/// Each Range option on a small fixed history:
///   rev 2: put a=1    rev 3: put b=22   rev 4: put c=3
///   rev 5: put a=4    rev 6: put d/x=5  rev 7: put d/y=0
///   rev 8: delete c
@Suite struct RangeTests {
    static func store() throws -> Store {
        let s = try Store(backend: MemoryBackend())
        for (k, v) in [("a", "1"), ("b", "22"), ("c", "3"), ("a", "4"), ("d/x", "5"), ("d/y", "0")] {
            _ = try s.put(PutRequest(key: bytes(k), value: bytes(v)))
        }
        _ = try s.deleteRange(DeleteRangeRequest(key: bytes("c")))
        return s
    }

    static func keys(_ r: RangeResult) -> [String] { r.kvs.map { String(decoding: $0.key, as: UTF8.self) } }

    @Test func singleKeyReturnsItsNewestVersion() throws {
        let r = try Self.store().range(RangeRequest(key: bytes("a")))
        #expect(r.kvs == [KeyValue(key: bytes("a"), createRevision: 2, modRevision: 5, version: 2, value: bytes("4"))])
        #expect(r.count == 1 && !r.more && r.revision == 8)
    }

    @Test func missingKeyReturnsNothing() throws {
        let r = try Self.store().range(RangeRequest(key: bytes("zz")))
        #expect(r.kvs.isEmpty && r.count == 0)
    }

    @Test func rangeEndBoundsTheRangeHalfOpen() throws {
        let r = try Self.store().range(RangeRequest(key: bytes("a"), rangeEnd: bytes("d/y")))
        #expect(Self.keys(r) == ["a", "b", "d/x"])
    }

    @Test func prefixRangeEndSelectsAPrefix() throws {
        let r = try Self.store().range(RangeRequest(key: bytes("d/"), rangeEnd: prefixRangeEnd(bytes("d/"))))
        #expect(Self.keys(r) == ["d/x", "d/y"])
    }

    @Test func zeroRangeEndMeansEveryKeyFromKeyOn() throws {
        let r = try Self.store().range(RangeRequest(key: bytes("b"), rangeEnd: [0]))
        #expect(Self.keys(r) == ["b", "d/x", "d/y"])
        let all = try Self.store().range(RangeRequest(key: [0], rangeEnd: [0]))
        #expect(Self.keys(all) == ["a", "b", "d/x", "d/y"])
    }

    @Test func rangeEndBelowKeyIsEmpty() throws {
        let r = try Self.store().range(RangeRequest(key: bytes("d"), rangeEnd: bytes("a")))
        #expect(r.kvs.isEmpty && r.count == 0)
    }

    @Test func limitCutsAndSetsMoreButCountsEverything() throws {
        var req = RangeRequest(key: [0], rangeEnd: [0])
        req.limit = 2
        let r = try Self.store().range(req)
        #expect(Self.keys(r) == ["a", "b"] && r.more && r.count == 4)
        req.limit = 4
        let exact = try Self.store().range(req)
        #expect(exact.kvs.count == 4 && !exact.more)
    }

    @Test func revisionReadsHistory() throws {
        var req = RangeRequest(key: [0], rangeEnd: [0])
        req.revision = 4
        let r = try Self.store().range(req)
        #expect(Self.keys(r) == ["a", "b", "c"])
        #expect(r.kvs[0].value == bytes("1") && r.kvs[0].version == 1)
        #expect(r.revision == 8, "the header carries the current revision")
    }

    @Test func revisionAboveCurrentIsAFutureRevision() throws {
        var req = RangeRequest(key: bytes("a"))
        req.revision = 9
        #expect(throws: MVCCError.futureRevision) { try Self.store().range(req) }
    }

    @Test func sortOrderAndTarget() throws {
        let s = try Self.store()
        func sorted(_ target: RangeRequest.SortTarget, _ order: RangeRequest.SortOrder) throws -> [String] {
            var req = RangeRequest(key: [0], rangeEnd: [0])
            req.sortTarget = target
            req.sortOrder = order
            return Self.keys(try s.range(req))
        }
        #expect(try sorted(.key, .descend) == ["d/y", "d/x", "b", "a"])
        #expect(try sorted(.key, .ascend) == ["a", "b", "d/x", "d/y"])
        #expect(try sorted(.mod, .descend) == ["d/y", "d/x", "a", "b"])
        #expect(try sorted(.create, .ascend) == ["a", "b", "d/x", "d/y"])
        #expect(try sorted(.value, .ascend) == ["d/y", "b", "a", "d/x"])  // "0" < "22" < "4" < "5"
        #expect(try sorted(.version, .descend) == ["a", "b", "d/x", "d/y"])  // ties keep key order
        #expect(try sorted(.mod, .none) == ["b", "a", "d/x", "d/y"], "a target without order sorts ascending")
    }

    @Test func sortWithLimitSortsEverythingFirst() throws {
        var req = RangeRequest(key: [0], rangeEnd: [0])
        req.sortTarget = .mod
        req.sortOrder = .descend
        req.limit = 1
        let r = try Self.store().range(req)
        #expect(Self.keys(r) == ["d/y"] && r.more)
    }

    @Test func keysOnlyDropsValues() throws {
        var req = RangeRequest(key: [0], rangeEnd: [0])
        req.keysOnly = true
        let r = try Self.store().range(req)
        #expect(Self.keys(r) == ["a", "b", "d/x", "d/y"])
        #expect(r.kvs.allSatisfy { $0.value.isEmpty })
        #expect(r.kvs[0].modRevision == 5 && r.kvs[0].version == 2)
    }

    @Test func countOnlyReturnsTheCountAlone() throws {
        var req = RangeRequest(key: [0], rangeEnd: [0])
        req.countOnly = true
        req.limit = 1
        let r = try Self.store().range(req)
        #expect(r.kvs.isEmpty && r.count == 4 && !r.more)
    }

    @Test func modAndCreateRevisionFilters() throws {
        let s = try Self.store()
        func filtered(_ set: (inout RangeRequest) -> Void) throws -> [String] {
            var req = RangeRequest(key: [0], rangeEnd: [0])
            set(&req)
            return Self.keys(try s.range(req))
        }
        #expect(try filtered { $0.minModRevision = 5 } == ["a", "d/x", "d/y"])
        #expect(try filtered { $0.maxModRevision = 5 } == ["a", "b"])
        #expect(try filtered { $0.minCreateRevision = 3 } == ["b", "d/x", "d/y"])
        #expect(try filtered { $0.maxCreateRevision = 3 } == ["a", "b"])
        var req = RangeRequest(key: [0], rangeEnd: [0])
        req.minModRevision = 6
        let r = try s.range(req)
        #expect(r.count == 4, "count ignores filters")
    }

    @Test func emptyKeyIsNotProvided() throws {
        #expect(throws: MVCCError.keyNotProvided) { try Self.store().range(RangeRequest(key: [])) }
    }
}
