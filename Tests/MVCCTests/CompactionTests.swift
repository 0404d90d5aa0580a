import Testing
@testable import MVCC

@Suite struct CompactionTests {
    /// Versions of "k" at revisions 2...11, then "gone" put at 12 and
    /// deleted at 13.
    static func history(_ backend: any Backend, limits: Limits = Limits()) throws -> Store {
        let s = try Store(backend: backend, limits: limits)
        for i in 0..<10 { _ = try s.put(PutRequest(key: bytes("k"), value: bytes("v\(i)"))) }
        _ = try s.put(PutRequest(key: bytes("gone"), value: bytes("x")))
        _ = try s.deleteRange(DeleteRangeRequest(key: bytes("gone")))
        return s
    }

    @Test func compactRejectsOldAndFutureRevisions() throws {
        let s = try Self.history(MemoryBackend())
        #expect(throws: MVCCError.futureRevision) { try s.compact(14) }
        try s.compact(5)
        #expect(throws: MVCCError.compacted) { try s.compact(5) }
        #expect(throws: MVCCError.compacted) { try s.compact(4) }
        try s.compact(13)
    }

    @Test func readsBelowTheCompactedRevisionFail() throws {
        let s = try Self.history(MemoryBackend())
        try s.compact(6)
        var req = RangeRequest(key: bytes("k"))
        req.revision = 5
        #expect(throws: MVCCError.compacted) { try s.range(req) }
        req.revision = 6
        #expect(try s.range(req).kvs[0].value == bytes("v4"), "the compacted revision itself stays readable")
        #expect(throws: MVCCError.compacted) { try s.txn(TxnRequest(success: [.range(RangeRequest(key: bytes("k"), revision: 3))])) }
    }

    @Test func compactionDeletesSupersededRevisionsInBatches() throws {
        let backend = MemoryBackend()
        var limits = Limits()
        limits.compactionBatchLimit = 2
        let s = try Self.history(backend, limits: limits)
        #expect(backend.revisionCount == 12)
        try s.compact(13)
        var steps = 0
        while try !s.compactionStep() { steps += 1 }
        // Left: k at 11, and the delete of "gone" at 13 (a change at the
        // compaction revision stays for watchers starting there); its put
        // at 12 and k's older versions are gone.
        #expect(backend.revisionCount == 2)
        #expect(steps >= 4, "10 deletions in batches of 2")
        #expect(try backend.metaInt64(.finishedCompactRevision) == 13)
        #expect(try s.range(RangeRequest(key: bytes("k"))).kvs[0].version == 10)
    }

    @Test func anInterruptedCompactionResumesOnReopen() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var limits = Limits()
        limits.compactionBatchLimit = 3
        do {
            let backend = try LMDBBackend(path: dir.database)
            let s = try Self.history(backend, limits: limits)
            try s.compact(13)
            try s.compactionStep()       // one batch of three, then "crash"
            try s.commit()
            backend.close()
        }
        let backend = try LMDBBackend(path: dir.database)
        let s = try Store(backend: backend, limits: limits)
        #expect(s.hasPendingCompaction)
        #expect(s.compactedRevision == 13)
        #expect(s.currentRevision == 13, "the compacted-away tombstone still counts as the newest revision")
        try s.finishCompaction()
        var count = 0
        try backend.forEachRevision(from: Revision(main: 0)) { _, _ in count += 1; return true }
        #expect(count == 2, "k at 11 and the delete at 13")
        #expect(try s.range(RangeRequest(key: bytes("k"))).kvs[0].value == bytes("v9"))
        #expect(try s.range(RangeRequest(key: bytes("gone"))).kvs.isEmpty)
        _ = try s.put(PutRequest(key: bytes("k"), value: bytes("after")))
        #expect(s.currentRevision == 14)
    }
}

extension RangeRequest {
    init(key: [UInt8], revision: Int64) {
        self.init(key: key)
        self.revision = revision
    }
}

@Suite struct LMDBBackendTests {
    @Test func aFullMapGrowsInsteadOfFailing() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let value = [UInt8](repeating: 0xab, count: 1_000)
        var limits = Limits()
        limits.backendBatchLimit = 400
        do {
            let backend = try LMDBBackend(path: dir.database, mapSize: 64 << 10)
            let s = try Store(backend: backend, limits: limits)
            for i in 0..<3_000 { _ = try s.put(PutRequest(key: bytes("key\(i)"), value: value)) }
            try s.commit()
            #expect(backend.mapSize > 64 << 10)
            #expect(backend.sizeInUse > 3_000_000)
            backend.close()
        }
        let s = try Store(backend: LMDBBackend(path: dir.database, mapSize: 64 << 10))
        #expect(s.keyCount == 3_000 && s.currentRevision == 3_001)
        #expect(try s.range(RangeRequest(key: bytes("key2999"))).kvs[0].value == value)
    }

    @Test func reopeningRestoresStateAndMeta() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        do {
            let backend = try LMDBBackend(path: dir.database)
            let s = try Store(backend: backend)
            _ = try s.put(PutRequest(key: bytes("a"), value: bytes("1")))
            _ = try s.put(PutRequest(key: bytes("a"), value: bytes("2")))
            _ = try s.deleteRange(DeleteRangeRequest(key: bytes("a")))
            _ = try s.put(PutRequest(key: bytes("a"), value: bytes("3")))
            s.setConsistentIndex(42)
            try s.commit()
            backend.close()
        }
        let s = try Store(backend: LMDBBackend(path: dir.database))
        #expect(try s.consistentIndex == 42)
        #expect(s.currentRevision == 5)
        let kv = try s.range(RangeRequest(key: bytes("a"))).kvs[0]
        #expect(kv == KeyValue(key: bytes("a"), createRevision: 5, modRevision: 5, version: 1, value: bytes("3")))
        #expect(try s.range(RangeRequest(key: bytes("a"), revision: 3)).kvs[0].version == 2)
        #expect(try s.range(RangeRequest(key: bytes("a"), revision: 4)).kvs.isEmpty)
    }

    /// The store commits by itself when a batch is full, inside a write:
    /// the consistent index on disk must then name the entry whose write
    /// it was, so recovery replays exactly the entries after it.
    @Test func consistentIndexOnDiskMatchesTheWritesInEveryCommit() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        var limits = Limits()
        limits.backendBatchLimit = 3
        var rng = SeededRandom(seed: testSeed())
        for _ in 0..<20 {
            let writes = Int.random(in: 1...40, using: &rng)
            let start: (index: UInt64, revision: Int64)
            do {
                let backend = try LMDBBackend(path: dir.database)
                let s = try Store(backend: backend, limits: limits)
                start = (try s.consistentIndex, s.currentRevision)
                // Every log entry here is one put, so entry i made revision
                // (the revision at index 0) + i.
                #expect(start.revision - 1 == Int64(start.index))
                for i in 1...UInt64(writes) {
                    s.setConsistentIndex(start.index + i)
                    _ = try s.put(PutRequest(key: bytes("k\(Int.random(in: 0..<5, using: &rng))"), value: bytes("v")))
                }
                backend.close()  // a crash: whatever the last commit left
            }
        }
    }

    @Test func uncommittedWritesAreVisibleToReads() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let backend = try LMDBBackend(path: dir.database)
        try backend.putRevision(RevisionKey(Revision(main: 2)), value: KeyValue(key: bytes("x"), modRevision: 2).encoded())
        #expect(backend.uncommittedWrites == 1)
        #expect(try backend.keyValue(at: RevisionKey(Revision(main: 2)), skipValue: false)?.key == bytes("x"))
        try backend.commit()
        #expect(backend.uncommittedWrites == 0)
        #expect(try backend.keyValue(at: RevisionKey(Revision(main: 2)), skipValue: false)?.key == bytes("x"))
        backend.close()
    }
}
