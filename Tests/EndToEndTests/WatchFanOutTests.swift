import EtcdClient
import Foundation
import Synchronization
import Testing
import TestSupport

/// The watch fan-out with connections spread over several I/O loops,
/// against a model: one writer's acknowledged puts, deletes and two-key
/// txns give every change and its revision; hundreds of watchers (single
/// keys, prefixes, the whole space; from now or from a revision in the
/// past; with prev_kv, without deletes) on streams of eight connections
/// must each see exactly their part of it, in order, once. One connection's
/// reader stalls while large values are written (its watchers fall behind
/// and catch up from history); some streams are cancelled midway (they
/// must have seen a prefix of their part).
@Suite struct WatchFanOutTests {
    struct Event: Equatable, CustomStringConvertible {
        var revision: Int64
        var key: String
        var isPut: Bool
        var value: String
        var prev: String?
        var description: String { "\(revision) \(isPut ? "PUT" : "DEL") \(key)=\(value.prefix(12)) prev=\(prev?.prefix(12) ?? "nil")" }
    }

    struct Spec {
        var range: KeyRange
        var keyPrefix: String  // the range as a string prefix ("" = exact key below)
        var exactKey: String?
        var startRevision: Int64
        var prevKV: Bool
        var noDelete: Bool

        func wants(_ e: Event, from first: Int64) -> Bool {
            guard e.revision >= first, !(noDelete && !e.isPut) else { return false }
            if let exactKey { return e.key == exactKey }
            return e.key.hasPrefix(keyPrefix)
        }
    }

    /// What one stream's consumer saw: per watch ID, the created header's
    /// revision and the events.
    final class Seen: Sendable {
        struct State {
            var createdAt: [Int64: Int64] = [:]
            var events: [Int64: [Event]] = [:]
            var failure: String?
        }
        let state = Locked(State())
    }

    static let prefixes = ["/fan/a/", "/fan/b/", "/fan/c/", "/fan/d/"]
    static let keys = prefixes.flatMap { p in (0..<10).map { "\(p)k\($0)" } }

    static func randomSpec(_ rng: inout SeededRandom, past: Int64) -> Spec {
        var spec: Spec
        switch Int.random(in: 0..<10, using: &rng) {
        case 0..<3:
            let key = keys.randomElement(using: &rng)!
            spec = Spec(range: .key(key), keyPrefix: "", exactKey: key, startRevision: 0, prevKV: false, noDelete: false)
        case 3..<8:
            let p = prefixes.randomElement(using: &rng)!
            spec = Spec(range: .prefix(p), keyPrefix: p, startRevision: 0, prevKV: false, noDelete: false)
        default:
            spec = Spec(range: .prefix("/fan/"), keyPrefix: "/fan/", startRevision: 0, prevKV: false, noDelete: false)
        }
        if past > 1 && Bool.random(using: &rng) { spec.startRevision = Int64.random(in: 1...past, using: &rng) }
        spec.prevKV = Int.random(in: 0..<3, using: &rng) == 0
        spec.noDelete = Int.random(in: 0..<10, using: &rng) == 0
        return spec
    }

    /// Consumes one stream until it ends or `stopAfter` responses with
    /// events (then it is cancelled by dropping it).
    static func consume(_ client: EtcdClient, _ specs: [Spec], into seen: Seen, stopAfter: Int?) async {
        var withEvents = 0
        do {
            let watchers = specs.map { spec in
                var o = WatchOptions()
                (o.startRevision, o.prevKV, o.noDelete) = (spec.startRevision, spec.prevKV, spec.noDelete)
                return (spec.range, o)
            }
            for try await r in client.watch(watchers) {
                seen.state.withLock { s in
                    if r.created { s.createdAt[r.watchID] = r.header.revision }
                    if r.canceled { s.failure = s.failure ?? "watch \(r.watchID) cancelled: \(r.cancelReason)" }
                    for e in r.events {
                        s.events[r.watchID, default: []].append(Event(
                            revision: e.kv.modRevision, key: e.kv.keyString, isPut: e.kind == .put,
                            value: String(decoding: e.kv.value, as: UTF8.self),
                            prev: e.prevKV.map { String(decoding: $0.value, as: UTF8.self) }))
                    }
                }
                if !r.events.isEmpty { withEvents += 1 }
                if let stopAfter, withEvents >= stopAfter { return }
            }
        } catch {
            seen.state.withLock { $0.failure = $0.failure ?? "stream failed: \(error)" }
        }
    }

    @Test func hundredsOfWatchersOnSeveralIOLoopsSeeTheModel() async throws {
        let seed = testSeed()
        let executor = ThreadTaskExecutor(label: "watch-fan-out")
        try await withTaskExecutorPreference(executor) {
            try await run(seed: seed, executor: executor)
        }
    }

    func run(seed: UInt64, executor: ThreadTaskExecutor) async throws {
        var rng = SeededRandom(seed: seed)
        let server = try ServerProcess(arguments: ["--experimental-io-threads", "4"])
        defer { server.stop() }
        let clients = try (0..<8).map { _ in try EtcdClient(endpoints: [server.endpoint], timeout: 20) }
        defer { for c in clients { c.shutdown() } }
        let writer = try EtcdClient(endpoints: [server.endpoint], timeout: 20)
        defer { writer.shutdown() }

        // The model: every acknowledged change, and the keys' values.
        var history: [Event] = []
        var values: [String: String] = [:]
        var streams: [(specs: [Spec], seen: Seen, cancelledEarly: Bool, task: Task<Void, Never>)] = []

        func openStreams(_ count: Int, past: Int64) {
            for _ in 0..<count {
                let client = clients.randomElement(using: &rng)!
                let specs = (0..<10).map { _ in Self.randomSpec(&rng, past: past) }
                let seen = Seen()
                let stopAfter: Int? = Int.random(in: 0..<6, using: &rng) == 0 ? Int.random(in: 1...40, using: &rng) : nil
                let task = Task(executorPreference: executor) { await Self.consume(client, specs, into: seen, stopAfter: stopAfter) }
                streams.append((specs, seen, stopAfter != nil, task))
            }
        }

        openStreams(12, past: 0)
        try await Task.sleep(for: .milliseconds(300))  // the watches are created
        let total = 1_200
        var revision: Int64 = 1
        for n in 0..<total {
            if n == 400 { openStreams(12, past: revision) }
            // The large values: while they are written, the first
            // connection's reader stalls twice (its loop sleeps).
            let big = (300..<700).contains(n)
            if n == 320 || n == 520 { clients[0].onLoop { usleep(1_500_000) } }
            let value = "v\(n)-" + String(repeating: "x", count: big ? 4_000 : Int.random(in: 10...300, using: &rng))
            let existing = values.keys.sorted()
            switch Int.random(in: 0..<20, using: &rng) {
            case 0..<3 where !existing.isEmpty:
                let key = existing.randomElement(using: &rng)!
                let r = try await writer.delete(.key(key))
                #expect(r.deleted == 1)
                revision = r.header.revision
                history.append(Event(revision: revision, key: key, isPut: false, value: "", prev: values[key]))
                values[key] = nil
            case 3..<6:
                let two = Array(Self.keys.shuffled(using: &rng).prefix(2))
                let r = try await writer.txn(compare: [], success: two.map { .put(Array($0.utf8), Array(value.utf8)) })
                revision = r.header.revision
                for key in two {
                    history.append(Event(revision: revision, key: key, isPut: true, value: value, prev: values[key]))
                    values[key] = value
                }
            default:
                let key = Self.keys.randomElement(using: &rng)!
                let r = try await writer.put(key, value)
                revision = r.header.revision
                history.append(Event(revision: revision, key: key, isPut: true, value: value, prev: values[key]))
                values[key] = value
            }
        }

        // Every stream still open gets all it is owed, within a bound.
        func expected(_ spec: Spec, createdAt: Int64?) -> [Event]? {
            guard let first = spec.startRevision > 0 ? spec.startRevision : createdAt.map({ $0 + 1 }) else { return nil }
            return history.filter { spec.wants($0, from: first) }.map { e in
                var e = e
                if !spec.prevKV { e.prev = nil }
                return e
            }
        }
        func caughtUp() -> Bool {
            streams.allSatisfy { s in
                s.cancelledEarly || s.seen.state.withLock { st in
                    st.failure != nil || s.specs.indices.allSatisfy { i in
                        guard let want = expected(s.specs[i], createdAt: st.createdAt[Int64(i)]) else { return false }
                        return (st.events[Int64(i)] ?? []).count >= want.count
                    }
                }
            }
        }
        let deadline = Date().addingTimeInterval(60)
        while !caughtUp() && Date() < deadline { try await Task.sleep(for: .milliseconds(50)) }

        var checked = 0
        for (index, s) in streams.enumerated() {
            let st = s.seen.state.withLock { $0 }
            if !s.cancelledEarly { #expect(st.failure == nil, "seed \(seed) stream \(index): \(st.failure ?? "")") }
            for (i, spec) in s.specs.enumerated() {
                let got = st.events[Int64(i)] ?? []
                guard let want = expected(spec, createdAt: st.createdAt[Int64(i)]) else {
                    #expect(s.cancelledEarly, "seed \(seed) stream \(index) watcher \(i) was never created")
                    continue
                }
                if s.cancelledEarly {
                    #expect(Array(want.prefix(got.count)) == got,
                            "seed \(seed) stream \(index) watcher \(i) (cancelled) saw other than a prefix of its events")
                } else {
                    if got != want {
                        let at = zip(got, want).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(got.count, want.count)
                        Issue.record("seed \(seed) stream \(index) watcher \(i) \(spec.range) from \(spec.startRevision): got \(got.count) events, want \(want.count); first difference at \(at): got \(at < got.count ? "\(got[at])" : "none"), want \(at < want.count ? "\(want[at])" : "none")")
                    }
                    checked += 1
                }
            }
        }
        for s in streams { s.task.cancel() }
        #expect(checked >= 150, "seed \(seed): only \(checked) watchers were checked")
        print("WatchFanOutTests: seed \(seed), \(history.count) events at \(revision) revisions, \(checked) watchers checked in full")
    }
}
