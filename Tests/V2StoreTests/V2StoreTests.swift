import Testing
@testable import V2Store

/// The v2 store's rules, each as etcd's v2 API states them (error codes
/// 100-108 and 401, actions, indexes).
@Suite struct V2StoreTests {
    @Test func setGetCreateUpdate() throws {
        var s = V2Store()
        let set = try s.set("/foo/bar", value: "1", dir: false, expiresAt: nil, condition: .none)
        #expect(set.action == "set" && set.node.key == "/foo/bar" && set.index == 1 && set.prevNode == nil)
        #expect(try s.get("/foo").isDir && s.children(of: "/foo", sorted: true).map(\.key) == ["/foo/bar"])
        #expect(try s.get("//foo/./bar/").value == "1", "paths are cleaned")
        let again = try s.set("/foo/bar", value: "2", dir: false, expiresAt: nil, condition: .none)
        #expect(again.prevNode?.value == "1" && again.node.createdIndex == 2)
        #expect(throws: V2Error(.nodeExist, "/foo/bar", 2)) {
            try s.set("/foo/bar", value: "3", dir: false, expiresAt: nil, condition: .mustNotExist)
        }
        #expect(throws: V2Error(.keyNotFound, "/nope", 2)) {
            try s.set("/nope", value: "3", dir: false, expiresAt: nil, condition: .mustExist)
        }
        let update = try s.set("/foo/bar", value: "3", dir: false, expiresAt: nil, condition: .mustExist)
        #expect(update.action == "update" && update.node.createdIndex == 2 && update.node.modifiedIndex == 3)
        #expect(throws: V2Error(.notFile, "/foo", 3)) { try s.set("/foo", value: "x", dir: false, expiresAt: nil, condition: .none) }
        #expect(throws: V2Error(.notDir, "/foo/bar", 3)) {
            try s.set("/foo/bar/baz", value: "x", dir: false, expiresAt: nil, condition: .none)
        }
        #expect(throws: V2Error(.rootReadOnly, "/", 3)) { try s.set("/", value: "x", dir: false, expiresAt: nil, condition: .none) }
        #expect(throws: V2Error(.keyNotFound, "/missing", 3)) { try s.get("/missing") }
    }

    @Test func compareAndSwapAndDelete() throws {
        var s = V2Store()
        _ = try s.set("/k", value: "one", dir: false, expiresAt: nil, condition: .none)
        #expect(throws: V2Error(.testFailed, "[two != one]", 1)) {
            try s.set("/k", value: "x", dir: false, expiresAt: nil, condition: .compare(value: "two", index: nil))
        }
        #expect(throws: V2Error(.testFailed, "[two != one] [7 != 1]", 1)) {
            try s.set("/k", value: "x", dir: false, expiresAt: nil, condition: .compare(value: "two", index: 7))
        }
        let cas = try s.set("/k", value: "two", dir: false, expiresAt: nil, condition: .compare(value: "one", index: 1))
        #expect(cas.action == "compareAndSwap" && cas.node.value == "two" && cas.prevNode?.value == "one")
        #expect(throws: V2Error(.testFailed, "[one != two]", 2)) {
            try s.delete("/k", dir: false, recursive: false, prevValue: "one", prevIndex: nil)
        }
        let cad = try s.delete("/k", dir: false, recursive: false, prevValue: "two", prevIndex: nil)
        #expect(cad.action == "compareAndDelete" && cad.prevNode?.value == "two")
        #expect(throws: V2Error(.keyNotFound, "/k", 3)) { try s.get("/k") }
    }

    @Test func directories() throws {
        var s = V2Store()
        _ = try s.set("/d", value: nil, dir: true, expiresAt: nil, condition: .none)
        _ = try s.set("/d/a", value: "1", dir: false, expiresAt: nil, condition: .none)
        #expect(throws: V2Error(.notFile, "/d", 2)) { try s.delete("/d", dir: false, recursive: false, prevValue: nil, prevIndex: nil) }
        #expect(throws: V2Error(.dirNotEmpty, "/d", 2)) { try s.delete("/d", dir: true, recursive: false, prevValue: nil, prevIndex: nil) }
        let gone = try s.delete("/d", dir: true, recursive: true, prevValue: nil, prevIndex: nil)
        #expect(gone.action == "delete" && gone.node.isDir)
        #expect(throws: V2Error(.keyNotFound, "/d/a", 3)) { try s.get("/d/a") }
        #expect(s.children(of: "/", sorted: true).isEmpty)
    }

    @Test func inOrderKeysSortByCreation() throws {
        var s = V2Store()
        let first = try s.createInOrder("/queue", value: "a", expiresAt: nil)
        let second = try s.createInOrder("/queue", value: "b", expiresAt: nil)
        #expect(first.node.key == "/queue/00000000000000000001" && second.node.key == "/queue/00000000000000000002")
        #expect(s.children(of: "/queue", sorted: true).map(\.value) == ["a", "b"])
    }

    @Test func ttlExpires() throws {
        var s = V2Store()
        _ = try s.set("/t", value: "1", dir: false, expiresAt: 6_000, condition: .none)
        _ = try s.set("/keep", value: "1", dir: false, expiresAt: nil, condition: .none)
        #expect(s.expire(now: 5_999).isEmpty)
        let expired = s.expire(now: 6_000)
        #expect(expired.map(\.action) == ["expire"] && expired.first?.node.key == "/t")
        #expect(throws: V2Error(.keyNotFound, "/t", 3)) { try s.get("/t") }
        #expect(try s.get("/keep").value == "1")
    }

    @Test func watchersSeeHistoryAndKnowWhenItIsGone() throws {
        var s = V2Store()
        _ = try s.set("/w/a", value: "1", dir: false, expiresAt: nil, condition: .none)
        _ = try s.set("/w/b", value: "2", dir: false, expiresAt: nil, condition: .none)
        #expect(try s.firstChange("/w/b", recursive: false, sinceIndex: 1)?.index == 2)
        #expect(try s.firstChange("/w", recursive: true, sinceIndex: 1)?.node.key == "/w/a")
        #expect(try s.firstChange("/w", recursive: false, sinceIndex: 1) == nil, "not the directory itself")
        #expect(try s.firstChange("/w/a", recursive: false, sinceIndex: 3) == nil, "nothing yet: wait")
        let removal = try s.delete("/w", dir: true, recursive: true, prevValue: nil, prevIndex: nil)
        #expect(V2Store.matches(removal, "/w/a", recursive: false), "a deleted directory ends its children's watchers too")
        for i in 0..<V2Store.historyLimit { _ = try s.set("/x", value: "\(i)", dir: false, expiresAt: nil, condition: .none) }
        #expect(throws: V2Error.self) { try s.firstChange("/w/a", recursive: false, sinceIndex: 1) }
    }
}
