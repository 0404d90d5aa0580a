import Testing
import TestSupport
@testable import V2Store

/// The v2 store as the server keeps it: changes arrive as logged requests,
/// the touched nodes go to storage, and a restart rebuilds the store from
/// storage alone.
@Suite struct V2PersistenceTests {
    static let paths = ["/a", "/a/b", "/a/b/c", "/a/d", "/e", "/e/f", "/_hidden", "/q", "", "/", "//e", "/a/./b", "/a/../e", "/_hidden/x", "a/b"]

    static func randomRequest(_ rng: inout SeededRandom, now: UInt64) -> V2Request {
        let methods: [V2Request.Method] = [.put, .put, .put, .post, .delete, .delete, .expire]
        var r = V2Request(method: methods.randomElement(using: &rng)!, path: paths.randomElement(using: &rng)!)
        r.value = ["", "x", "y", "ü"].randomElement(using: &rng)!
        r.dir = rng.next() % 5 == 0
        r.recursive = rng.next() % 3 == 0
        switch rng.next() % 4 {
        case 0: r.prevExist = true
        case 1: r.prevExist = false
        default: break
        }
        if rng.next() % 5 == 0 { r.prevValue = ["x", "y"].randomElement(using: &rng)! }
        if rng.next() % 6 == 0 { r.prevIndex = UInt64.random(in: 1...30, using: &rng) }
        if rng.next() % 4 == 0 { r.expiresAt = now + UInt64.random(in: 0...3_000, using: &rng) }
        r.refresh = r.expiresAt != nil && rng.next() % 4 == 0
        r.now = now
        return r
    }

    @Test func requestsSurviveTheirEncoding() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        for _ in 0..<2_000 {
            let r = Self.randomRequest(&rng, now: rng.next() >> 20)
            #expect(V2Request(encoded: r.encoded()) == r, "seed \(seed)")
            let bytes = r.encoded()
            for cut in [1, bytes.count / 2, bytes.count - 1] where cut < bytes.count {
                #expect(V2Request(encoded: Array(bytes[..<cut])) == nil, "seed \(seed): a truncated request decoded")
            }
        }
    }

    @Test func aRestoredStoreIsTheStoreThatWasStored() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        var live = V2Store()
        var disk: [String: [UInt8]] = [:]
        var now: UInt64 = 1_700_000_000_000
        for step in 0..<3_000 {
            now += UInt64.random(in: 0...400, using: &rng)
            _ = try? live.apply(Self.randomRequest(&rng, now: now))
            for (path, node) in live.takeTouched() { disk[path] = node?.encoded() }
            if step % 50 == 0 {
                let stored = disk.map { V2Store.Node(encoded: $0.value)! }
                let restored = V2Store(restoring: stored, index: live.index)
                #expect(Self.tree(restored) == Self.tree(live), "seed \(seed), step \(step)")
                #expect(restored.nextExpiry == live.nextExpiry, "seed \(seed), step \(step)")
                // Restored, it goes on as the original would.
                var a = live, b = restored
                let r = Self.randomRequest(&rng, now: now)
                let (oa, ob) = (Self.outcome { () throws(V2Error) in try a.apply(r) }, Self.outcome { () throws(V2Error) in try b.apply(r) })
                #expect(oa == ob, "seed \(seed), step \(step)")
                #expect(Self.tree(a) == Self.tree(b), "seed \(seed), step \(step)")
            }
        }
    }

    @Test func aWatcherOfAnIndexFromBeforeARestoreHearsItWasCleared() throws {
        var s = V2Store()
        _ = try s.set("/k", value: "1", dir: false, expiresAt: nil, condition: .none)
        _ = try s.set("/k", value: "2", dir: false, expiresAt: nil, condition: .none)
        var restored = V2Store(restoring: s.allNodes, index: s.index)
        #expect(throws: V2Error(.eventIndexCleared, "the requested history has been cleared [3/2]", 2)) {
            try restored.firstChange("/k", recursive: false, sinceIndex: 2)
        }
        #expect(try restored.firstChange("/k", recursive: false, sinceIndex: 3) == nil)
        _ = try restored.set("/k", value: "3", dir: false, expiresAt: nil, condition: .none)
        #expect(try restored.firstChange("/k", recursive: false, sinceIndex: 3)?.node.value == "3")
    }

    @Test func aRefreshKeepsTheValueAndTellsNoWatcher() throws {
        var s = V2Store()
        _ = try s.set("/k", value: "v", dir: false, expiresAt: 1_000, condition: .none)
        var r = V2Request(method: .put, path: "/k")
        r.refresh = true
        r.prevExist = true
        r.expiresAt = 9_000
        let e = try s.apply(r)
        #expect(e.first?.node.value == "v" && e.first?.node.expiresAt == 9_000)
        #expect(try s.firstChange("/k", recursive: false, sinceIndex: 2) == nil)
        #expect(s.expire(now: 5_000).isEmpty)
    }

    /// Every node with its fields and children, in key order.
    static func tree(_ s: V2Store) -> [String] {
        s.allNodes.sorted { $0.key < $1.key }.map {
            "\($0.key) \($0.value ?? "-") \($0.isDir) \($0.createdIndex) \($0.modifiedIndex) \($0.expiresAt ?? 0) \($0.children.sorted())"
        } + ["index \(s.index)"]
    }

    static func outcome(_ body: () throws(V2Error) -> [V2Store.Event]) -> Result<[V2Store.Event], V2Error> {
        do { return .success(try body()) } catch { return .failure(error) }
    }
}
