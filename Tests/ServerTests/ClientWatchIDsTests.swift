import Testing
import TestSupport
@testable import Server

@Suite struct ClientWatchIDsTests {
    /// Random inserts, lookups and removals of client IDs (mostly small and
    /// counting up, as clients number them; some negative, huge, or reused)
    /// against a dictionary.
    @Test func behavesAsADictionary() {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        var table = ClientWatchIDs()
        var model: [Int64: Int] = [:]
        var keys: [Int64] = []  // the model's keys, in an order the seed decides
        var next: Int64 = 0
        for step in 0..<20_000 {
            let clientID: Int64
            switch rng.next() % 10 {
            case 0: clientID = Int64(bitPattern: rng.next())
            case 1: clientID = Int64(rng.next() % 5_000)
            case 2, 3: clientID = keys.isEmpty ? 0 : keys[Int(rng.next() % UInt64(keys.count))]
            default:
                clientID = next
                next += 1
            }
            if model[clientID] != nil && rng.next() % 2 == 0 {
                table[clientID] = nil
                model[clientID] = nil
                keys.remove(at: keys.firstIndex(of: clientID)!)
            } else {
                let hubID = Int(rng.next() % 1_000_000)
                table[clientID] = hubID
                if model.updateValue(hubID, forKey: clientID) == nil { keys.append(clientID) }
            }
            if rng.next() % 500 == 0 {
                // Drop everything, as a stream whose watchers all cancel.
                for k in keys { table[k] = nil }
                model = [:]
                keys = []
                next = 0
            }
            let probe = rng.next() % 2 == 0 ? clientID : Int64(rng.next() % 6_000) - 100
            #expect(table[probe] == model[probe], "seed \(seed) step \(step) id \(probe)")
            #expect(table.count == model.count, "seed \(seed) step \(step)")
            if table[probe] != model[probe] || table.count != model.count { return }
        }
        #expect(table.hubIDs.sorted() == model.values.sorted(), "seed \(seed)")
    }
}
