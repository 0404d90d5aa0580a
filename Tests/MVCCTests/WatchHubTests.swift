import Testing
@testable import MVCC

@Suite struct RangeIndexTests {
    /// Stabbing queries against a brute-force scan, with inserts and removes.
    @Test func findsExactlyTheIntervalsContainingAKey() {
        var rng = SeededRandom(seed: testSeed())
        var index = RangeIndex()
        var model: [(id: Int, start: [UInt8], end: [UInt8]?, place: Int32)] = []
        func key() -> [UInt8] { (0..<Int(rng.next() % 3 + 1)).map { _ in UInt8(rng.next() % 5) + 97 } }
        for step in 0..<3_000 {
            if rng.next() % 3 != 0 || model.isEmpty {
                let s = key(), e: [UInt8]? = rng.next() % 4 == 0 ? nil : key()
                let place = index.insert(Member(next: 0, id: Int32(step), noPut: false, noDelete: false), start: s, end: e)
                model.append((step, s, e, place))
            } else {
                let victim = model.remove(at: Int(rng.next() % UInt64(model.count)))
                if let moved = index.remove(at: victim.place, start: victim.start, end: victim.end) {
                    // The hub's bookkeeping: the moved member now has the victim's place.
                    guard let i = model.firstIndex(where: { $0.id == Int(moved) }) else {
                        Issue.record("step \(step): moved an unknown member \(moved)")
                        return
                    }
                    #expect(model[i].start == victim.start && model[i].end == victim.end)
                    model[i].place = victim.place
                }
            }
            let probe = key()
            var found: [Int] = []
            index.forEachContaining(probe) { found += $0.map { Int($0.id) } }
            #expect(found.count == Set(found).count, "a member listed twice")
            let want = Set(model.filter {
                compareBytes($0.start, probe) <= 0 && ($0.end.map { compareBytes(probe, $0) < 0 } ?? true)
            }.map(\.id))
            #expect(Set(found) == want, "step \(step), key \(probe)")
            if Set(found) != want { return }
        }
    }
}

/// Hundreds of watchers with random ranges, start revisions and filters,
/// some of them slow (their events bounce and must come back from history),
/// over random writes and compactions; every watcher's stream is checked
/// against the changes the reference model logs op by op, for etcd's
/// guarantees: ordered, unique, reliable (nothing missing from where it
/// started to the end, unless compacted away, which cancels it), atomic (a
/// revision's events in one delivery), resumable (cancel, then restart from
/// the last revision + 1), bookmarkable (a progress point taken while synced
/// is never followed by older events), and filters.
@Suite struct WatchHubModelTests {
    struct Tracked {
        var range: KeyRange
        var start: Int64          // first revision it must see
        var noPut = false, noDelete = false
        var deliveries: [[WatchEvent]] = []
        var compactedAt: Int64?
        var canceledByUser = false
        var slow = false
        /// The watcher this one resumes (started at the revision after the
        /// last one that watcher got).
        var resumes: WatchHub.ID?
        /// Progress bookmarks: (deliveries so far, revision) taken while the
        /// hub called the watcher synced, as a server answers a progress
        /// request. Nothing at or below the revision may come after.
        var bookmarks: [(deliveries: Int, revision: Int64)] = []
        /// Asked for prev_kv: checked against the model on each delivery.
        var prevKV = false
    }

    @Test func everyWatcherSeesExactlyItsChanges() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        var limits = Limits()
        limits.maxTxnOps = 8
        let store = try Store(backend: MemoryBackend(), limits: limits)
        store.leaseExists = { [100, 200].contains($0) }
        var model = ReferenceModel()
        model.maxTxnOps = 8
        model.leases = [100, 200]
        let hub = WatchHub()
        hub.catchUpMaxEvents = 7      // small batches: many catch-up passes
        hub.catchUpMaxWatchers = 5
        hub.catchUpMaxBytes = 120     // and passes that stop on bytes
        var tracked: [WatchHub.ID: Tracked] = [:]
        var gen = OperationGenerator()
        var nextID = 0

        var prevKVChecks = 0
        /// As the server does when it sends: each non-create event's previous
        /// version, read at revision - 1, must be the model's.
        func checkPrevKV(_ id: WatchHub.ID, _ events: [WatchEvent]) throws {
            guard tracked[id]!.prevKV else { return }
            for e in events where !e.isCreate {
                guard let before = model.states[e.revision - 1] else { continue }  // compacted: may be absent
                let got = try store.previousVersion(of: e.kv.key, before: e.revision)
                #expect(got == before[e.kv.key], "seed \(seed): prev_kv of \(e.kv.key) at \(e.revision)")
                prevKVChecks += 1
            }
        }
        func deliver(_ id: WatchHub.ID, _ events: [WatchEvent]) {
            if tracked[id]!.slow {
                hub.desync(id, from: events[0].revision)  // the stream is backed up: bounce
            } else {
                tracked[id]!.deliveries.append(events)
                try? checkPrevKV(id, events)
            }
        }
        store.onChange = { rev, events in
            for (id, evs) in hub.dispatch(revision: rev, events: events) { deliver(id, evs) }
        }
        func catchUp() throws {
            let r = try hub.catchUp(store) { !tracked[$0]!.slow }
            for (id, evs) in r.deliveries {
                tracked[id]!.deliveries.append(evs)
                try checkPrevKV(id, evs)
            }
            for (id, compactRev, _) in r.compacted { tracked[id]!.compactedAt = compactRev }
        }

        for _ in 0..<3_000 {
            let op = gen.next(&rng, current: model.current, compacted: model.compacted)
            if case .range = op { continue }
            let theirs = Outcome { try model.apply(op) }
            let mine = Outcome { try store.apply(op) }
            #expect(mine == theirs, "seed \(seed)")
            switch rng.next() % 10 {
            case 0, 1, 2:  // a new watcher
                let (k, e) = gen.keyRange(&rng)
                var t = Tracked(range: KeyRange(key: k.isEmpty ? [0] : k, rangeEnd: e), start: 0)
                let startRev: Int64 = rng.next() % 3 == 0 ? 0 : Int64.random(in: max(model.compacted - 2, 1)...(model.current + 3), using: &rng)
                t.start = startRev == 0 ? model.current + 1 : startRev
                t.noPut = rng.next() % 8 == 0
                t.noDelete = rng.next() % 8 == 0
                t.slow = rng.next() % 5 == 0
                t.prevKV = rng.next() % 3 == 0
                tracked[nextID] = t
                hub.add(nextID, range: t.range, startRevision: startRev, noPut: t.noPut, noDelete: t.noDelete,
                        currentRevision: store.currentRevision)
                nextID += 1
            case 3:  // cancel one, and often resume it from the revision after the last it got
                if let id = tracked.keys.sorted().first(where: { tracked[$0]!.compactedAt == nil && !tracked[$0]!.canceledByUser }),
                   rng.next() % 3 == 0 {
                    hub.remove(id)
                    tracked[id]!.canceledByUser = true
                    if rng.next() % 2 == 0 {
                        let old = tracked[id]!
                        let resumeAt = max(old.start, (old.deliveries.last?.last?.revision ?? 0) + 1)
                        var t = Tracked(range: old.range, start: resumeAt, noPut: old.noPut, noDelete: old.noDelete)
                        t.resumes = id
                        tracked[nextID] = t
                        hub.add(nextID, range: t.range, startRevision: resumeAt, noPut: t.noPut, noDelete: t.noDelete,
                                currentRevision: store.currentRevision)
                        nextID += 1
                    }
                }
            case 4, 5:  // slow consumers speed up or slow down
                for id in tracked.keys where rng.next() % 6 == 0 { tracked[id]!.slow.toggle() }
            case 6:  // bookmarks for the synced
                for id in tracked.keys where hub.isSynced(id) && rng.next() % 4 == 0 {
                    tracked[id]!.bookmarks.append((tracked[id]!.deliveries.count, store.currentRevision))
                }
            default:
                break
            }
            try catchUp()
            if rng.next() % 4 == 0 { try store.compactionStep() }
        }
        for id in tracked.keys { tracked[id]!.slow = false }
        var passes = 0
        while hub.hasUnsynced && passes < 10_000 { try catchUp(); passes += 1 }
        #expect(!hub.hasUnsynced, "seed \(seed): catch-up did not finish")

        for (id, t) in tracked.sorted(by: { $0.key < $1.key }) {
            let want = model.log.keys.sorted().filter { $0 >= t.start }.flatMap { rev in
                model.log[rev]!.filter { e in
                    t.range.contains(e.kv.key) && !(t.noPut && e.kind == .put) && !(t.noDelete && e.kind == .delete)
                }
            }
            let got = t.deliveries.flatMap { $0 }
            let where_ = "seed \(seed), watcher \(id) (\(t.range), from \(t.start))"
            if t.compactedAt != nil || t.canceledByUser {
                #expect(Self.same(got, Array(want.prefix(got.count))),
                        "\(where_): not a prefix: got \(got.map(\.revision)), want \(want.map(\.revision)), compacted at \(t.compactedAt.map(String.init) ?? "-")")
                if let c = t.compactedAt {
                    // Its position (at least its start and one past what it
                    // got) must have been below the compaction.
                    let position = max(t.start, (got.last?.revision ?? 0) + 1)
                    #expect(position < c, "\(where_): cancelled for compaction at \(c) at position \(position)")
                }
            } else {
                #expect(Self.same(got, want), "\(where_): got \(got.map(\.revision)), want \(want.map(\.revision))")
            }
            // Bookmarkable: after a bookmark at r, only revisions above r.
            for b in t.bookmarks {
                let later = t.deliveries.dropFirst(b.deliveries).flatMap { $0 }
                #expect(later.allSatisfy { $0.revision > b.revision },
                        "\(where_): an event at or below bookmark \(b.revision) came after it")
            }
            // Atomic: no revision split across deliveries.
            var seen = Set<Int64>()
            for d in t.deliveries {
                let revs = Set(d.map(\.revision))
                #expect(seen.isDisjoint(with: revs), "\(where_): a revision split across deliveries")
                seen.formUnion(revs)
            }
        }
        // Resumable: a cancelled watcher's events followed by its resumption's
        // are exactly what the original would have got, had it stayed.
        for (_, t) in tracked {
            guard let original = t.resumes, t.compactedAt == nil, !t.canceledByUser,
                  let o = tracked[original] else { continue }
            let joined = o.deliveries.flatMap { $0 } + t.deliveries.flatMap { $0 }
            let want = model.log.keys.sorted().filter { $0 >= o.start }.flatMap { rev in
                model.log[rev]!.filter { e in
                    o.range.contains(e.kv.key) && !(o.noPut && e.kind == .put) && !(o.noDelete && e.kind == .delete)
                }
            }
            #expect(Self.same(joined, want), "seed \(seed): resumption of watcher \(original) lost or repeated events")
        }
        #expect(tracked.values.contains { $0.resumes != nil }, "some watcher was resumed")
        #expect(tracked.values.contains { !$0.bookmarks.isEmpty }, "some watcher was bookmarked")
        #expect(prevKVChecks > 100, "prev_kv was checked")
        #expect(tracked.count > 300, "hundreds of watchers")
        #expect(tracked.values.contains { $0.compactedAt != nil }, "some watcher met a compaction")
    }

    static func same(_ a: [WatchEvent], _ b: [WatchEvent]) -> Bool { a == b }
}
