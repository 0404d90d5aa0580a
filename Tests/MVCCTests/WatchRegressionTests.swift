import Testing
@testable import MVCC

/// etcd's watch bugs, as named scenarios against the hub and store.
@Suite struct WatchRegressionTests {
    final class Harness {
        let store: Store
        let hub = WatchHub()
        var received: [WatchHub.ID: [WatchEvent]] = [:]
        var compacted: [WatchHub.ID: Int64] = [:]

        init() throws {
            store = try Store(backend: MemoryBackend())
            store.onChange = { [unowned self] rev, events in
                for (id, evs) in hub.dispatch(revision: rev, events: events) { received[id, default: []] += evs }
            }
        }

        func put(_ k: String, _ v: String) throws { _ = try store.put(PutRequest(key: bytes(k), value: bytes(v))) }
        func delete(_ k: String) throws { _ = try store.deleteRange(DeleteRangeRequest(key: bytes(k))) }

        func catchUpFully() throws {
            while hub.hasUnsynced {
                let r = try hub.catchUp(store) { _ in true }
                for (id, evs) in r.deliveries { received[id, default: []] += evs }
                for (id, c, _) in r.compacted { compacted[id] = c }
            }
        }

        func summary(_ id: WatchHub.ID) -> [String] {
            (received[id] ?? []).map { "\($0.kind) \(String(decoding: $0.kv.key, as: UTF8.self))@\($0.revision)" }
        }
    }

    /// etcd #19179: a watch opened at the compaction revision must get the
    /// delete made at that very revision.
    @Test func watchOpenedAtTheCompactionRevisionSeesItsDelete() throws {
        let h = try Harness()
        try h.put("k", "1")   // 2
        try h.delete("k")     // 3
        try h.put("other", "x")  // 4
        try h.store.compact(3)
        try h.store.finishCompaction()
        h.hub.add(1, range: .single(bytes("k")), startRevision: 3, currentRevision: h.store.currentRevision)
        try h.catchUpFully()
        #expect(h.summary(1) == ["delete k@3"])
        #expect(h.compacted[1] == nil)
    }

    /// etcd #18089: a lagging watcher whose next event is a delete at the
    /// revision being compacted must still receive it.
    @Test func compactingOnADeleteDropsNoEventOfALaggingWatcher() throws {
        let h = try Harness()
        h.hub.add(1, range: .from(bytes("a"), to: bytes("z")), startRevision: 0, currentRevision: h.store.currentRevision)
        try h.put("k", "1")   // 2, delivered live
        h.hub.desync(1, from: 3)  // the stream backs up before revision 3
        try h.delete("k")     // 3: not delivered live (unsynced)
        try h.store.compact(3)
        try h.store.finishCompaction()
        try h.catchUpFully()
        #expect(h.summary(1) == ["put k@2", "delete k@3"])
    }

    /// etcd #20221: a watch with a future start revision receives nothing
    /// older than it asked for.
    @Test func futureRevisionWatchGetsNoOlderEvents() throws {
        let h = try Harness()
        try h.put("k", "0")  // 2
        h.hub.add(1, range: .single(bytes("k")), startRevision: 5, currentRevision: h.store.currentRevision)
        for v in ["3", "4", "5", "6"] { try h.put("k", v) }  // 3...6
        try h.catchUpFully()
        #expect(h.summary(1) == ["put k@5", "put k@6"])
    }

    /// A watch whose start is below the compaction is cancelled with the
    /// compaction revision, never handed a partial history.
    @Test func compactedStartIsCancelledWithTheCompactRevision() throws {
        let h = try Harness()
        for v in ["1", "2", "3"] { try h.put("k", v) }
        try h.store.compact(3)
        h.hub.add(1, range: .single(bytes("k")), startRevision: 2, currentRevision: h.store.currentRevision)
        try h.catchUpFully()
        #expect(h.compacted[1] == 3)
        #expect(h.summary(1).isEmpty)
        #expect(h.hub.watchers[1] == nil)
    }
}

@Suite struct WatchCatchUpSharingTests {
    /// Watchers that read history alike (same start, range and filters)
    /// share one events array in a catch-up pass, numbered alike; any
    /// difference gives a group of its own, and every delivery is exactly
    /// the watcher's own share of the history.
    @Test func alikeWatchersShareTheirDeliveryGroup() throws {
        let store = try Store(backend: MemoryBackend())
        for k in ["/p/a", "/q/a", "/p/b", "/p/a"] {  // revisions 2...5
            _ = try store.put(PutRequest(key: bytes(k), value: bytes("v")))
        }
        _ = try store.deleteRange(DeleteRangeRequest(key: bytes("/p/b")))  // 6
        let hub = WatchHub()
        let p = KeyRange(key: bytes("/p/"), rangeEnd: bytes("/p0")), q = KeyRange(key: bytes("/q/"), rangeEnd: bytes("/q0"))
        let watchers: [(range: KeyRange, start: Int64, noPut: Bool)] = [
            (p, 2, false), (p, 2, false), (p, 2, true), (q, 2, false), (p, 3, false), (p, 2, false),
        ]
        for (id, w) in watchers.enumerated() {
            hub.add(id, range: w.range, startRevision: w.start, noPut: w.noPut, currentRevision: store.currentRevision)
        }
        let r = try hub.catchUp(store) { _ in true }
        #expect(r.deliveries.count == r.deliveryGroups.count)
        var group: [Int: Int] = [:]
        for (i, (id, events)) in r.deliveries.enumerated() {
            group[id] = r.deliveryGroups[i]
            let w = watchers[id]
            let want = try store.events(from: w.start, through: store.currentRevision, maxEvents: 100, maxBytes: 1 << 20).0
                .filter { w.range.contains($0.kv.key) && !(w.noPut && $0.kind == .put) }
            #expect(events.map(\.revision) == want.map(\.revision) && events.map(\.kind) == want.map(\.kind), "watcher \(id)")
        }
        #expect(Set(group.keys) == Set(0..<6))
        #expect(group[0] == group[1] && group[1] == group[5], "alike watchers share: \(group)")
        #expect(Set([group[0], group[2], group[3], group[4]]).count == 4, "different ones do not: \(group)")
    }
}
