import Testing
@testable import MVCC

@Suite struct RevisionLayoutTests {
    /// The parts cover the value in order; the head fills whole overflow
    /// pages exactly and the other parts fit leaf nodes.
    @Test func partsCoverTheValue() {
        var rng = SeededRandom(seed: testSeed())
        for pageSize in [4096, 16384, 65536] {
            let layout = RevisionLayout(pageSize: pageSize)
            let leafPart = layout.nodeMax - RevisionLayout.nodeHeader - RevisionLayout.partKeySize
            #expect(layout.storesWhole(layout.nodeMax - RevisionLayout.nodeHeader - RevisionKey.size, tombstone: false))
            let smallest = layout.nodeMax - RevisionLayout.nodeHeader - RevisionKey.size + 1
            let sizes = [smallest, pageSize - 16, pageSize - 15, 2 * pageSize - 16, 3 * pageSize]
                + (0..<200).map { _ in smallest + Int(rng.next() % UInt64(40 * pageSize)) }
            for count in sizes {
                #expect(!layout.storesWhole(count, tombstone: false))
                let parts = layout.parts(of: count)
                #expect(parts.first?.lowerBound == 0 && parts.last?.upperBound == count, "\(count)")
                #expect(zip(parts, parts.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound }, "\(count)")
                #expect(parts.count <= RevisionLayout.maxParts)
                for (i, part) in parts.enumerated() where part.count > leafPart {
                    #expect(i == 0 && (part.count + 16) % pageSize == 0, "\(count): part \(i) of \(part.count)")
                }
                #expect(parts.allSatisfy { !$0.isEmpty })
            }
        }
    }

    /// Random puts (values up to 40 KiB), deletes and commits against a
    /// dictionary, the first fifth written in the layout before parts
    /// (some written again after, as a log replay does): every read path
    /// sees the model, before and after a defragment (which converts), and
    /// whole-backend entries list each revision once, whole.
    @Test func largeValuesReadBackInEveryLayout() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let dir = TemporaryDirectory()
        defer { dir.remove() }
        let backend = try LMDBBackend(path: dir.database, syncOnCommit: false)
        defer { backend.close() }
        backend.writesLargeValuesWhole = true
        var model: [RevisionKey: [UInt8]] = [:]
        var main: Int64 = 1
        func differences(_ seen: [RevisionKey: [UInt8]]) -> [String] {
            Set(seen.keys).union(model.keys).filter { seen[$0] != model[$0] }.map { "\($0.revision) (\(seen[$0]?.count ?? -1) bytes, not \(model[$0]?.count ?? -1))" }.sorted()
        }
        func check(_ label: String) throws {
            var walked: [RevisionKey: [UInt8]] = [:]
            var order: [RevisionKey] = []
            try backend.forEachRevision(from: Revision(main: 0)) { k, v in
                walked[k] = Array(v)
                order.append(k)
                return true
            }
            #expect(walked == model, "seed \(seed) \(label): differs at \(differences(walked))")
            #expect(order == order.sorted { $0.revision < $1.revision }, "seed \(seed) \(label)")
            var entries: [RevisionKey: [UInt8]] = [:]
            try backend.forEachEntry { table, k, v in
                if table == "key", let key = RevisionKey(bytes: k) { entries[key] = Array(v) }
            }
            #expect(entries == model, "seed \(seed) \(label): differs at \(differences(entries))")
            for (k, v) in model {
                let kv = try backend.keyValue(at: k, skipValue: false)
                #expect(kv != nil && kv == KeyValue(encoded: v), "seed \(seed) \(label) at \(k.revision)")
            }
            // From the middle: starts at the first revision at or after it.
            if let middle = order.dropFirst(order.count / 2).first {
                var first: RevisionKey?
                try backend.forEachRevision(from: middle.revision) { k, _ in first = k; return false }
                #expect(first == middle, "seed \(seed) \(label)")
            }
            backend.endRead()
            guard backend.uncommittedWrites == 0 else { return }
            // A committed read on another thread (what snapshots use): the
            // same revisions, and their sizes without putting parts together.
            let copier = backend.copier
            let (read, sizes) = try copier.read { state in
                var read: [(RevisionKey, [UInt8])] = [], sizes: [(RevisionKey, Int)] = []
                try state.forEachRevision { k, v in read.append((RevisionKey(bytes: k)!, Array(v))) }
                try state.forEachRevisionSize { k, n in sizes.append((RevisionKey(bytes: k)!, n)) }
                return (read, sizes)
            }
            #expect(Dictionary(uniqueKeysWithValues: read) == model, "seed \(seed) \(label)")
            #expect(sizes.map(\.0) == read.map(\.0) && sizes.map(\.1) == read.map(\.1.count), "seed \(seed) \(label)")
        }
        for step in 0..<600 {
            if step == 120 {
                backend.writesLargeValuesWhole = false
                for (k, v) in model where rng.next() % 3 == 0 { try backend.putRevision(k, value: v) }
            }
            switch rng.next() % 10 {
            case 0...5:
                main += 1
                let size = rng.next() % 3 == 0 ? Int(rng.next() % 40_000) : Int(rng.next() % 5_000)
                let kv = KeyValue(key: Array("k\(main % 7)".utf8), createRevision: main, modRevision: main, version: 1,
                                  value: (0..<size).map { _ in UInt8(truncatingIfNeeded: rng.next()) }, lease: main % 3)
                let key = RevisionKey(Revision(main: main), isTombstone: rng.next() % 10 == 0)
                try backend.putRevision(key, value: kv.encoded())
                model[key] = kv.encoded()
            case 6, 7:
                guard let victim = model.keys.randomElement(using: &rng) else { continue }
                try backend.deleteRevision(victim)
                if rng.next() % 2 == 0 { try backend.deleteRevision(victim) }  // already gone
                model[victim] = nil
            case 8:
                try backend.commit()
            default:
                try check("step \(step)")
            }
        }
        try backend.commit()
        try check("end")
        #expect(try backend.entryCount() == model.count, "seed \(seed): a revision in parts counts once")
        let copier = try backend.beginDefragment()
        try copier.rebuild(to: backend.defragmentTarget, syncBytes: 30_000)
        try backend.finishDefragment()
        try check("after the defragment")
    }

    /// What the layout is for: 4 KiB values take one overflow page and a
    /// little of a leaf each, not two pages (8 KiB ones two and a little,
    /// not three).
    @Test func largeValuesFillTheirPages() throws {
        for (size, pages) in [(4_096, 1), (8_192, 2)] {
            let dir = TemporaryDirectory()
            defer { dir.remove() }
            let backend = try LMDBBackend(path: dir.database, syncOnCommit: false)
            defer { backend.close() }
            let count = 500
            for main in 2..<(2 + count) {
                let kv = KeyValue(key: Array("key".utf8), createRevision: 2, modRevision: Int64(main), version: Int64(main),
                                  value: [UInt8](repeating: UInt8(main % 251), count: size))
                try backend.putRevision(RevisionKey(Revision(main: Int64(main))), value: kv.encoded())
            }
            try backend.commit()
            let perRevision = Double(backend.highWaterMark) / Double(count)
            #expect(perRevision < Double(pages * 4096) * 1.04, "\(size)-byte values: \(perRevision) bytes each")
        }
    }
}
