import Testing
import TestSupport
@testable import Server

@Suite struct KeyWaitsTests {
    /// Random waits on keys and prefixes, replaced and removed, against a
    /// model that keeps each waiter's keys or prefix and its start: every
    /// key's waiters are the model's, key waiters first, each group in the
    /// order it began waiting.
    @Test func behavesAsTheModel() {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        var waits = KeyWaits()
        /// By ID: what it waits on (keys or a prefix), and when it began.
        var model: [KeyWaits.ID: (keys: [[UInt8]], prefix: [UInt8]?, since: Int)] = [:]
        let keys: [[UInt8]] = ["a", "a/1", "a/2", "b", "b/1", ""].map { Array($0.utf8) }
        for step in 0..<1_500 {
            switch rng.next() % 4 {
            case 0:
                let id = waits.newID()
                #expect(model[id] == nil)
                let chosen = (0..<Int(rng.next() % 3)).map { _ in keys[Int(rng.next() % UInt64(keys.count))] }
                let unique = chosen.reduce(into: [[UInt8]]()) { if !$0.contains($1) { $0.append($1) } }
                waits.wait(id, onKeys: unique)
                if !unique.isEmpty { model[id] = (unique, nil, step) }
            case 1:
                let id = waits.newID()
                let prefix = keys[Int(rng.next() % 3)]
                waits.wait(id, onPrefix: prefix)
                model[id] = ([], prefix, step)
            case 2:
                // An exact-key waiter moves on to other keys.
                guard let id = model.filter({ $0.value.prefix == nil }).keys.sorted().first else { continue }
                let next = [keys[Int(rng.next() % UInt64(keys.count))]]
                waits.wait(id, onKeys: next)
                model[id] = (next, nil, step)
            default:
                guard !model.isEmpty else { continue }
                let id = model.keys.sorted()[Int(rng.next() % UInt64(model.count))]
                waits.remove(id)
                model[id] = nil
            }
            #expect(waits.count == model.count && waits.isEmpty == model.isEmpty, "seed \(seed) step \(step)")
            for key in keys {
                let onKey = model.filter { $0.value.keys.contains(key) }.sorted { $0.value.since < $1.value.since }.map(\.key)
                let onPrefix = model.filter { $0.value.prefix.map { key.starts(with: $0) } ?? false }
                    .sorted { $0.value.since < $1.value.since }.map(\.key)
                #expect(waits.waiters(of: key) == onKey + onPrefix, "seed \(seed) step \(step) key \(key)")
            }
        }
    }
}
