import Testing
@testable import MVCC

@Suite struct LeaseStorageTests {
    /// Leases survive a reopen of the LMDB file, and the keys that have a
    /// lease at open are exactly the live keys whose newest version has one.
    @Test func leasesAndLeasedKeysSurviveAReopen() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        do {
            let backend = try LMDBBackend(path: dir.database)
            let store = try Store(backend: backend)
            store.leaseExists = { [7, 8, -3].contains($0) }
            var attached: [([UInt8], Int64)] = []
            store.onLeaseAttach = { attached.append(($0, $1)) }
            try store.save(StoredLease(id: 7, ttl: 60))
            try store.save(StoredLease(id: 8, ttl: 10, remainingTTL: 4))
            try store.save(StoredLease(id: -3, ttl: 5))  // IDs sort as unsigned
            try store.save(StoredLease(id: 9, ttl: 5))
            try store.removeLease(9)
            _ = try store.put(PutRequest(key: bytes("a"), value: bytes("1"), lease: 7))
            _ = try store.put(PutRequest(key: bytes("b"), value: bytes("1"), lease: 7))
            _ = try store.put(PutRequest(key: bytes("b"), value: bytes("2")))          // drops its lease
            _ = try store.put(PutRequest(key: bytes("c"), value: bytes("1"), lease: 8))
            _ = try store.deleteRange(DeleteRangeRequest(key: bytes("c")))              // gone
            _ = try store.put(PutRequest(key: bytes("d"), value: bytes("1"), lease: 8))
            var keep = PutRequest(key: bytes("d"), value: bytes("2"))
            keep.ignoreLease = true                                                     // keeps lease 8
            _ = try store.put(keep)
            #expect(attached.map { String(decoding: $0.0, as: UTF8.self) } == ["a", "b", "c", "d"])
            #expect(try store.lease(of: bytes("d")) == 8)
            #expect(try store.lease(of: bytes("b")) == 0)
            #expect(try store.lease(of: bytes("c")) == nil)
            try store.commit()
            backend.close()
        }
        let backend = try LMDBBackend(path: dir.database)
        defer { backend.close() }
        let store = try Store(backend: backend)
        #expect(try store.storedLeases() == [StoredLease(id: 7, ttl: 60), StoredLease(id: 8, ttl: 10, remainingTTL: 4),
                                             StoredLease(id: -3, ttl: 5)])
        #expect(store.leasedKeysAtOpen == [bytes("a"): 7, bytes("d"): 8])
    }

    /// A revocation's deletes: one revision, one event per existing key,
    /// missing keys skipped, no limit of a txn's 128 operations.
    @Test func deleteKeysIsOneRevision() throws {
        let store = try Store(backend: MemoryBackend())
        for i in 0..<300 { _ = try store.put(PutRequest(key: bytes("k\(i)"), value: bytes("v"))) }
        var changes: [(Int64, [WatchEvent])] = []
        store.onChange = { changes.append(($0, $1)) }
        let before = store.currentRevision
        let r = store.deleteKeys((0..<300).map { bytes("k\($0)") } + [bytes("missing")])
        #expect(r.deleted == 300)
        #expect(r.revision == before + 1 && store.currentRevision == before + 1)
        #expect(changes.count == 1 && changes[0].1.count == 300 && changes[0].1.allSatisfy { $0.kind == .delete })
        #expect(try store.range(RangeRequest(key: bytes("k"), rangeEnd: bytes("l"))).count == 0)
        let none = store.deleteKeys([bytes("missing")])
        #expect(none.deleted == 0 && store.currentRevision == before + 1)
    }
}
