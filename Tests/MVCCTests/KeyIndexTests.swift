import Testing
@testable import MVCC

/// The worked example from `KeyIndex`'s documentation, revision by revision.
@Suite struct KeyIndexTests {
    /// put 1, put 2, delete 3, put 4, put 5, delete 6, put 7.
    static func example() -> KeyIndex {
        var ki = KeyIndex()
        ki.put(Revision(main: 1))
        ki.put(Revision(main: 2))
        ki.tombstone(Revision(main: 3))
        ki.put(Revision(main: 4))
        ki.put(Revision(main: 5))
        ki.tombstone(Revision(main: 6))
        ki.put(Revision(main: 7))
        return ki
    }

    static func shape(_ ki: KeyIndex) -> [[Int64]] {
        ki.generations.map { $0.revs.map(\.main) }
    }

    @Test func generationsOfTheExample() {
        let ki = Self.example()
        #expect(Self.shape(ki) == [[1, 2, 3], [4, 5, 6], [7]])
        #expect(ki.generations.map(\.created.main) == [1, 4, 7])
        #expect(ki.generations.map(\.version) == [3, 3, 1])
        #expect(ki.isLive)
    }

    /// (atRev, modified, created, version); modified 0 = nothing visible.
    static let reads: [(Int64, Int64, Int64, Int64)] = [
        (0, 0, 0, 0), (1, 1, 1, 1), (2, 2, 1, 2), (3, 0, 0, 0), (4, 4, 4, 1),
        (5, 5, 4, 2), (6, 0, 0, 0), (7, 7, 7, 1), (100, 7, 7, 1),
    ]

    @Test func getAtEachRevision() {
        let ki = Self.example()
        for (atRev, modified, created, version) in Self.reads {
            let found = ki.get(atRev: atRev)
            #expect((found?.modified.main ?? 0) == modified, "at \(atRev)")
            #expect((found?.created.main ?? 0) == created, "at \(atRev)")
            #expect((found?.version ?? 0) == version, "at \(atRev)")
        }
    }

    /// (atRev, generations left, revision kept for the backend; 0 = none).
    static let compactions: [(Int64, [[Int64]], Int64)] = [
        (1, [[1, 2, 3], [4, 5, 6], [7]], 1),
        (2, [[2, 3], [4, 5, 6], [7]], 2),
        (3, [[4, 5, 6], [7]], 0),
        (4, [[4, 5, 6], [7]], 4),
        (5, [[5, 6], [7]], 5),
        (6, [[7]], 0),
        (7, [[7]], 7),
    ]

    @Test func compactAtEachRevision() {
        for (atRev, remaining, kept) in Self.compactions {
            var ki = Self.example()
            let k = ki.compact(atRev: atRev)
            #expect(Self.shape(ki) == remaining, "compact(\(atRev))")
            #expect((k?.main ?? 0) == kept, "compact(\(atRev))")
            // Versions survive compaction.
            #expect(ki.get(atRev: 7)?.version == 1)
            if atRev <= 5 { #expect(ki.get(atRev: 5)?.version == 2) }
        }
    }

    @Test func compactingPastAFinalDeleteEmptiesTheKey() {
        var ki = Self.example()
        ki.tombstone(Revision(main: 8))
        #expect(!ki.isLive)
        #expect(ki.compact(atRev: 8) == nil)
        #expect(ki.isEmpty)
    }

    @Test func compactionsInSequenceMatchOneCompaction() {
        var stepwise = Self.example()
        for rev in Int64(1)...5 { _ = stepwise.compact(atRev: rev) }
        var once = Self.example()
        _ = once.compact(atRev: 5)
        #expect(Self.shape(stepwise) == Self.shape(once))
    }
}

@Suite struct OrderedKeyMapTests {
    /// Random inserts, updates, removals and range scans against a
    /// dictionary that is sorted on every read.
    @Test func matchesASortedDictionary() {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        var map = OrderedKeyMap<Int>()
        var model: [[UInt8]: Int] = [:]
        func randomKey() -> [UInt8] {
            (0..<Int(rng.next() % 4 + 1)).map { _ in UInt8(rng.next() % 6) + 97 }
        }
        for step in 0..<20_000 {
            let k = randomKey()
            switch rng.next() % 4 {
            case 0, 1:
                let v = Int(rng.next() % 1000)
                map.update(k, orInsert: { 0 }) { $0 = v }
                model[k] = v
            case 2:
                map.remove(k)
                model[k] = nil
            default:
                let end = rng.next() % 3 == 0 ? nil : randomKey()
                var got: [([UInt8], Int)] = []
                map.forEach(from: k, to: end) { key, v in got.append((Array(key), v)); return true }
                let wantKeys: [[UInt8]] = model.keys.filter { key in
                    guard compareBytes(key, k) >= 0 else { return false }
                    guard let end else { return true }
                    return compareBytes(key, end) < 0
                }.sorted { compareBytes($0, $1) < 0 }
                let gotKeys: [[UInt8]] = got.map { $0.0 }
                let gotValues: [Int] = got.map { $0.1 }
                let wantValues: [Int] = wantKeys.map { model[$0]! }
                #expect(gotKeys == wantKeys && gotValues == wantValues, "seed \(seed) step \(step)")
                if gotKeys != wantKeys { return }
            }
            #expect(map.count == model.count, "seed \(seed) step \(step)")
            if map.count != model.count { return }
        }
        // Removing through updateAll keeps order and count right.
        map.updateAll { _, v in v % 2 == 0 }
        model = model.filter { $0.value % 2 == 0 }
        var all: [[UInt8]] = []
        map.forEach(from: [], to: nil) { k, _ in all.append(Array(k)); return true }
        #expect(all == model.keys.sorted { compareBytes($0, $1) < 0 }, "seed \(seed)")
    }
}
