import Testing
@testable import MVCC

@Suite struct OnlineDefragmentTests {
    struct Entry: Hashable { var table: String; var key: [UInt8]; var value: [UInt8] }

    func contents(_ b: LMDBBackend) throws -> Set<Entry> {
        var out = Set<Entry>()
        try b.forEachEntry { t, k, v in out.insert(Entry(table: t, key: Array(k), value: Array(v))) }
        b.endRead()
        return out
    }

    /// Random writes and commits before the copy, while it is taken, and
    /// between catch-up batches: the swapped-in file holds exactly what a
    /// backend that never defragmented holds, and writes go on after it.
    @Test func writesDuringADefragmentAreKept() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        for round in 0..<4 {
            let dir = TemporaryDirectory(), reference = TemporaryDirectory()
            defer { dir.remove(); reference.remove() }
            let backend = try LMDBBackend(path: dir.database, syncOnCommit: false)
            let model = try LMDBBackend(path: reference.database, syncOnCommit: false)
            defer { backend.close(); model.close() }
            var main: Int64 = 1
            func randomWrite() throws {
                let both: [LMDBBackend] = [backend, model]
                switch rng.next() % 10 {
                case 0...5:
                    main += 1
                    let value = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                    for b in both { try b.putRevision(RevisionKey(Revision(main: main)), value: value) }
                case 6, 7:
                    let victim = RevisionKey(Revision(main: Int64(rng.next() % UInt64(main)) + 1))
                    for b in both { try b.deleteRevision(victim) }
                case 8:
                    let id = Int64(rng.next() % 20)
                    if rng.next() % 2 == 0 {
                        for b in both { try b.putLease(id, [UInt8](repeating: UInt8(id), count: 16)) }
                    } else {
                        for b in both { try b.deleteLease(id) }
                    }
                default:
                    let v = Int64(rng.next() % 1000)
                    for b in both { try b.setMetaInt64(.consistentIndex, v) }
                }
                if rng.next() % 50 == 0 { for b in both { try b.commit() } }
            }
            for _ in 0..<2_000 { try randomWrite() }
            let copier = try backend.beginDefragment()
            for _ in 0..<Int(rng.next() % 500) { try randomWrite() }
            try backend.commit()
            // Small batches too: the rebuild goes on after the key it stopped at.
            try copier.rebuild(to: backend.defragmentTarget, syncBytes: Int(rng.next() % 50_000) + 1)
            while true {
                for _ in 0..<Int(rng.next() % 300) { try randomWrite() }
                let left = try backend.catchUpDefragment(limit: Int(rng.next() % 200) + 1)
                if left < 50 || rng.next() % 8 == 0 { break }
            }
            for _ in 0..<Int(rng.next() % 100) { try randomWrite() }
            try backend.finishDefragment()
            #expect(!backend.isDefragmenting)
            try model.commit()
            #expect(try contents(backend) == contents(model), "seed \(seed) round \(round)")
            for _ in 0..<200 { try randomWrite() }
            try backend.commit()
            try model.commit()
            #expect(try contents(backend) == contents(model), "seed \(seed) round \(round), after")
        }
    }

    /// Deleted data stays in the file (LMDB keeps the pages for reuse) but
    /// not in the size in use; a defragment returns it.
    @Test func sizeInUseLeavesOutFreePages() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let backend = try LMDBBackend(path: dir.database)
        defer { backend.close() }
        let value = [UInt8](repeating: 7, count: 2_000)
        for main in 2..<5_002 { try backend.putRevision(RevisionKey(Revision(main: Int64(main))), value: value) }
        try backend.commit()
        let full = backend.highWaterMark
        #expect(backend.sizeInUse > 10_000_000 && backend.sizeInUse <= full)
        for main in 2..<4_902 { try backend.deleteRevision(RevisionKey(Revision(main: Int64(main)))) }
        try backend.commit()
        try backend.putRevision(RevisionKey(Revision(main: 6_000)), value: [1])
        try backend.commit()  // a later transaction, so the freed pages are listed
        #expect(backend.highWaterMark >= full)  // the file does not shrink
        #expect(backend.sizeInUse < full / 10, "\(backend.sizeInUse) of \(full)")
        let copier = try backend.beginDefragment()
        try copier.rebuild(to: backend.defragmentTarget, syncBytes: 1 << 20)
        try backend.finishDefragment()
        #expect(backend.highWaterMark < full / 10)
    }

    /// Revisions written out of order (as a store before appending was)
    /// leave pages part full; the rebuilt copy fills them: 1 KiB values
    /// three to a 4 KiB page.
    @Test func aRebuiltCopyFillsItsPages() throws {
        var rng = SeededRandom(seed: testSeed())
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let backend = try LMDBBackend(path: dir.database, syncOnCommit: false)
        defer { backend.close() }
        let count = 3_000
        for main in (2..<(2 + count)).shuffled(using: &rng) {
            let value = (0..<1_000).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            try backend.putRevision(RevisionKey(Revision(main: Int64(main))), value: value)
        }
        try backend.commit()
        let before = try contents(backend)
        let scattered = backend.highWaterMark
        let copier = try backend.beginDefragment()
        try copier.rebuild(to: backend.defragmentTarget, syncBytes: 100_000)
        try backend.finishDefragment()
        let leafPages = (count + 2) / 3
        #expect(backend.highWaterMark <= (leafPages + leafPages / 50 + 8) * 4096, "\(backend.highWaterMark), was \(scattered)")
        #expect(scattered > backend.highWaterMark * 5 / 4)
        #expect(try contents(backend) == before)
    }

    @Test func anAbortedDefragmentLeavesTheFileAlone() throws {
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let backend = try LMDBBackend(path: dir.database)
        defer { backend.close() }
        try backend.putRevision(RevisionKey(Revision(main: 2)), value: [1, 2, 3])
        let copier = try backend.beginDefragment()
        try copier.rebuild(to: backend.defragmentTarget, syncBytes: 1 << 20)
        try backend.putRevision(RevisionKey(Revision(main: 3)), value: [4])
        _ = try backend.catchUpDefragment(limit: 10)
        backend.abortDefragment()
        #expect(!backend.isDefragmenting)
        try backend.commit()
        var revisions: [Int64] = []
        try backend.forEachRevision(from: Revision(main: 0)) { k, _ in revisions.append(k.revision.main); return true }
        #expect(revisions == [2, 3])
    }
}
