import Testing
import TestSupport

/// The cluster fault test's checker: legal histories (generated from a
/// model of a linearizable store, with overlapping operations) pass, and
/// each kind of damage a broken cluster could do is caught.
@Suite struct HistoryCheckerTests {
    /// A legal history: operations at random times, overlapping across
    /// clients (each client's one after another); each takes effect at an
    /// instant inside its interval, in the order of those instants.
    func legalHistory(_ rng: inout SeededRandom) -> (ClusterHistory, [ClusterHistory.Committed]) {
        var h = ClusterHistory()
        var committed: [ClusterHistory.Committed] = []
        var state: [String: (String, Int64)] = [:]
        var revision: Int64 = 10
        var clientRevision: [Int: Int64] = [:]
        var now = 0.0
        var busyUntil = [Double](repeating: -1, count: 8)
        for n in 0..<200 {
            now += Double.random(in: 0...1, using: &rng)
            let client = Int.random(in: 0..<8, using: &rng)
            guard busyUntil[client] < now else { continue }
            let key = "k\(Int.random(in: 0..<3, using: &rng))"
            // Took effect at `now`; began up to 2 earlier (not before the
            // client's previous call ended), ended up to 2 later.
            let start = max(now - Double.random(in: 0...2, using: &rng), busyUntil[client] + 0.0001)
            let end = now + Double.random(in: 0...2, using: &rng)
            busyUntil[client] = end
            switch Int.random(in: 0..<3, using: &rng) {
            case 0:
                revision += 1
                let value = "v\(n)"
                committed.append(.init(revision: revision, key: key, value: value))
                state[key] = (value, revision)
                let known = Int.random(in: 0..<5, using: &rng) > 0
                h.writes.append(.init(client: client, key: key, value: value, start: start, end: end, revision: known ? revision : nil))
            case 1:
                let s = state[key]
                h.reads.append(.init(client: client, linearizable: true, key: key, start: start, end: end,
                                     revision: revision, value: s?.0, modRevision: s?.1 ?? 0))
                clientRevision[client] = revision
            default:
                // A serializable read may be stale, but not older than what
                // this client saw before.
                let seen = max(clientRevision[client] ?? 10, 10)
                let at = Int64.random(in: seen...revision, using: &rng)
                let s = committed.last { $0.key == key && $0.revision <= at }
                h.reads.append(.init(client: client, linearizable: false, key: key, start: start, end: end,
                                     revision: at, value: s?.value, modRevision: s?.revision ?? 0))
                clientRevision[client] = at
            }
        }
        // Failed writes that never took effect.
        h.writes.append(.init(client: 0, key: "k0", value: "lost-but-never-acknowledged", start: 1, end: 2, revision: nil))
        return (h, committed)
    }

    @Test func legalHistoriesPass() {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        for _ in 0..<50 {
            let (h, committed) = legalHistory(&rng)
            let v = h.violations(committed: committed, base: 10, baseState: [:])
            #expect(v.isEmpty, "seed \(seed): \(v.prefix(3))")
        }
    }

    @Test func damageIsCaught() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        var (h, committed) = legalHistory(&rng)
        func caught(_ h: ClusterHistory, _ committed: [ClusterHistory.Committed], _ what: String) {
            #expect(!h.violations(committed: committed, base: 10, baseState: [:]).isEmpty, "seed \(seed): \(what) not caught")
        }
        // An acknowledged write missing from the history.
        let acked = try #require(h.writes.firstIndex { $0.revision != nil })
        var lost = committed
        lost.removeAll { $0.value == h.writes[acked].value }
        for i in lost.indices { lost[i].revision = 11 + Int64(i) }
        caught(h, lost, "a lost write")
        // A write acknowledged at another revision than it got.
        var misreported = h
        misreported.writes[acked].revision! += 1
        caught(misreported, committed, "a misreported revision")
        // A linearizable read that missed an acknowledged write: move it
        // after the write's end and give it the revision before the write.
        let w = h.writes[acked]
        var stale = h
        stale.reads.append(.init(client: 9, linearizable: true, key: w.key, start: w.end + 0.001, end: w.end + 0.002,
                                 revision: w.revision! - 1, value: nil, modRevision: 0))
        let before = committed.last { $0.key == w.key && $0.revision < w.revision! }
        stale.reads[stale.reads.count - 1].value = before?.value
        stale.reads[stale.reads.count - 1].modRevision = before?.revision ?? 0
        caught(stale, committed, "a stale linearizable read")
        // The same read served serializably is fine.
        var serializable = stale
        serializable.reads[serializable.reads.count - 1].linearizable = false
        #expect(serializable.violations(committed: committed, base: 10, baseState: [:]).isEmpty, "seed \(seed)")
        // A read that returned a value the key did not hold at its revision.
        var dirty = h
        dirty.reads[0].value = "never-written"
        caught(dirty, committed, "a value never committed")
        // A client's reads going back in revision.
        var back = h
        let r = h.reads[h.reads.count - 1]
        back.reads.append(.init(client: r.client, linearizable: false, key: r.key, start: r.start + 100, end: r.end + 100,
                                revision: 10, value: nil, modRevision: 0))
        back.reads[back.reads.count - 1].value = nil
        caught(back, committed, "a read going back in revision")
        // Two writes whose revisions contradict real time.
        let later = try #require(h.writes.lastIndex { $0.revision != nil })
        h.writes[later].start = 10_000
        h.writes[later].end = 10_001
        h.writes[acked].start = 20_000
        h.writes[acked].end = 20_001
        caught(h, committed, "writes out of real-time order")
    }
}
