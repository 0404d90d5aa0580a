import EtcdClient
import Foundation
import Testing

/// The Swift client against a spawned swetcd: every call, its errors,
/// concurrency over a pool, deadlines and failover.
@Suite struct EtcdClientTests {
    func withClient(connections: Int = 1, _ body: (EtcdClient, ServerProcess) async throws -> Void) async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let client = try EtcdClient(endpoints: [server.endpoint], connections: connections)
        defer { client.close() }
        try await body(client, server)
    }

    @Test func putGetAndOptions() async throws {
        try await withClient { client, _ in
            let first = try await client.put("a/1", "x")
            #expect(first.header.revision == 2 && first.prevKV == nil)
            var prev = PutOptions()
            prev.prevKV = true
            let second = try await client.put("a/1", "y", prev)
            #expect(second.prevKV?.valueString == "x")
            try await client.put("a/2", "z")
            try await client.put("b", "w")

            let one = try await client.get("a/1")
            #expect(one.kvs.map(\.valueString) == ["y"] && one.kvs[0].version == 2 && one.kvs[0].createRevision == 2)
            #expect(try await client.get(.prefix("a/")).kvs.map(\.keyString) == ["a/1", "a/2"])
            #expect(try await client.get(.range(Array("a/2".utf8), end: Array("c".utf8))).kvs.map(\.keyString) == ["a/2", "b"])
            #expect(try await client.get(.from(Array("a/2".utf8))).count == 2)

            var o = GetOptions()
            o.limit = 1
            let limited = try await client.get(.prefix(""), o)
            #expect(limited.kvs.count == 1 && limited.more && limited.count == 3)
            o = GetOptions()
            o.revision = 2
            #expect(try await client.get("a/1", o).kvs[0].valueString == "x")
            o = GetOptions()
            o.sortTarget = .mod
            o.sortOrder = .descend
            #expect(try await client.get(.prefix(""), o).kvs.map(\.keyString) == ["b", "a/2", "a/1"])
            o = GetOptions()
            o.keysOnly = true
            #expect(try await client.get(.prefix("a/"), o).kvs.allSatisfy { $0.value.isEmpty })
            o = GetOptions()
            o.countOnly = true
            let counted = try await client.get(.prefix(""), o)
            #expect(counted.count == 3 && counted.kvs.isEmpty)
            o = GetOptions()
            o.minModRevision = 4
            #expect(try await client.get(.prefix(""), o).kvs.map(\.keyString) == ["a/2", "b"])
        }
    }

    @Test func deleteTxnAndCompact() async throws {
        try await withClient { client, _ in
            try await client.put("k", "1")
            try await client.put("k", "2")
            let t = try await client.txn(
                compare: [Compare(.key("k"), .version(2), .equal), Compare(.key("k"), .value(Array("2".utf8)), .equal)],
                success: [.put(Array("then".utf8), Array("yes".utf8)), .get(.key("k")),
                          .txn(compare: [], success: [.get(.key("then"))], failure: [])],
                failure: [.put(Array("else".utf8), Array("yes".utf8))])
            #expect(t.succeeded && t.responses.count == 3)
            if case .get(let got) = t.responses[1] { #expect(got.kvs.first?.valueString == "2") } else { Issue.record("not a get") }
            if case .txn(let inner) = t.responses[2], case .get(let seen) = inner.responses.first {
                #expect(seen.kvs.first?.valueString == "yes", "a nested txn reads the outer txn's write")
            } else { Issue.record("not a nested txn") }

            let d = try await client.delete(.key("k"), prevKV: true)
            #expect(d.deleted == 1 && d.prevKVs.map(\.valueString) == ["2"])
            let header = try await client.compact(4, physical: true)
            #expect(header.revision == 5)
            var old = GetOptions()
            old.revision = 3
            await #expect(throws: EtcdError.compacted) { try await client.get("k", old) }
            old.revision = 99
            await #expect(throws: EtcdError.futureRevision) { try await client.get("k", old) }
        }
    }

    @Test func errorsAreTyped() async throws {
        try await withClient { client, _ in
            await #expect(throws: EtcdError.keyNotProvided) { try await client.put("", "v") }
            var lease = PutOptions()
            lease.lease = 99
            await #expect(throws: EtcdError.leaseNotFound) { try await client.put("k", "v", lease) }
            var ignore = PutOptions()
            ignore.ignoreValue = true
            await #expect(throws: EtcdError.keyNotFound) { try await client.put("missing", "", ignore) }
            await #expect(throws: EtcdError.duplicateKey) {
                try await client.txn(compare: [], success: [.put(Array("a".utf8), []), .put(Array("a".utf8), [])])
            }
        }
    }

    @Test func statusMembersAndSnapshot() async throws {
        try await withClient { client, server in
            for i in 0..<10 { try await client.put("big/\(i)", String(repeating: "x", count: 50_000)) }
            let status = try await client.status()
            #expect(status.version == "3.5.0" && status.leader == status.header.memberID && status.raftIndex == 12,
                    "the membership entry, the leader's empty entry and ten puts: \(status)")
            let members = try await client.memberList()
            #expect(members.count == 1 && members[0].id == status.header.memberID && members[0].name == "default")
            let path = server.dataDir + "-client-snapshot.db"
            defer { try? FileManager.default.removeItem(atPath: path) }
            let size = try await client.snapshot(to: path)
            #expect(size > 500_000)
            #expect((try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) == size + 32)
        }
    }

    @Test func manyConcurrentCallsOverAPool() async throws {
        try await withClient(connections: 4) { client, _ in
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<1_000 { group.addTask { try await client.put("c/\(i)", "\(i)") } }
                try await group.waitForAll()
            }
            var o = GetOptions()
            o.countOnly = true
            let r = try await client.get(.prefix("c/"), o)
            #expect(r.count == 1_000 && r.header.revision == 1_001)
        }
    }

    @Test func failsOverToAnEndpointThatAnswers() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let dead = try ClosedPort()
        let client = try EtcdClient(endpoints: ["127.0.0.1:\(dead.port)", server.endpoint])
        defer { client.close() }
        try await client.put("k", "v")
        #expect(try await client.get("k").kvs.map(\.valueString) == ["v"])
    }

    @Test func unreachableAndSilentServersGiveTypedErrors() async throws {
        let dead = try ClosedPort()
        let nobody = try EtcdClient(endpoints: ["127.0.0.1:\(dead.port)"])
        defer { nobody.close() }
        do {
            _ = try await nobody.get("k")
            Issue.record("a call to a closed port succeeded")
        } catch EtcdError.unavailable {
        }
        // Accepts TCP (backlog) but never speaks: the deadline must end it.
        let silent = try SilentListener()
        let client = try EtcdClient(endpoints: ["127.0.0.1:\(silent.port)"], timeout: 0.3)
        defer { client.close() }
        await #expect(throws: EtcdError.deadlineExceeded) { try await client.get("k") }
    }
}

/// A port with nothing listening on it.
struct ClosedPort {
    let port: UInt16
    init() throws {
        let l = try SilentListener()
        port = l.port
    }  // the listener closes here, leaving the port unbound
}

/// A socket that listens and never accepts or answers.
final class SilentListener {
    let fd: Int32
    let port: UInt16

    /// - Parameter port: 0 for one the kernel picks.
    init(port requested: UInt16 = 0) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        self.fd = fd
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = requested.bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, len) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &len) == 0
            }
        }
        guard ok else {
            close(fd)
            throw E2EError("cannot listen")
        }
        port = UInt16(bigEndian: addr.sin_port)
    }

    deinit { close(fd) }
}

/// The client's watch: an AsyncSequence, and a resumable one that survives
/// a server restart without losing or repeating events.
@Suite struct EtcdClientWatchTests {
    @Test func watchDeliversCreatedThenEventsInOrder() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let client = try EtcdClient(endpoints: [server.endpoint])
        defer { client.close() }
        try await client.put("/pods/a", "0")
        var options = WatchOptions()
        options.prevKV = true
        let stream = client.watch(.prefix("/pods/"), options)
        var iterator = stream.makeAsyncIterator()
        let created = try await iterator.next()
        #expect(created?.created == true && created?.header.revision == 2)
        try await client.put("/pods/a", "1")
        try await client.put("/other", "x")
        try await client.delete(.prefix("/pods/"))
        let first = try #require(try await iterator.next())
        #expect(first.events.map(\.kv.valueString) == ["1"] && first.events[0].prevKV?.valueString == "0")
        let second = try #require(try await iterator.next())
        #expect(second.events.map(\.kind) == [.delete] && second.events[0].kv.modRevision == 5)
        #expect(second.events[0].prevKV?.valueString == "1")
    }

    /// RequestProgress on the stream: after the events, a response with
    /// watch ID -1 and no events at a revision no lower than the last
    /// event's (etcd's promise that nothing at or below it is still to come).
    @Test func requestedProgressComesAfterTheEventsItCovers() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let client = try EtcdClient(endpoints: [server.endpoint])
        defer { client.close() }
        let (stream, requestProgress) = client.watchStream([(.prefix("/pods/"), WatchOptions())])
        var iterator = stream.makeAsyncIterator()
        #expect(try await iterator.next()?.created == true)
        let written = try await client.put("/pods/a", "1").header.revision
        _ = try await client.put("/other", "x")
        requestProgress()
        let event = try #require(try await iterator.next())
        #expect(event.events.map(\.kv.modRevision) == [written])
        let progress = try #require(try await iterator.next())
        #expect(progress.watchID == -1 && progress.isProgressNotification && progress.header.revision >= written + 1,
                "\(progress)")
    }

    @Test func historyFiltersAndCompactedStarts() async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let client = try EtcdClient(endpoints: [server.endpoint])
        defer { client.close() }
        for v in ["1", "2", "3"] { try await client.put("k", v) }
        try await client.delete(.key("k"))
        var options = WatchOptions()
        options.startRevision = 2
        options.noDelete = true
        var events: [String] = []
        for try await r in client.watch(.key("k"), options) {
            events += r.events.map(\.kv.valueString)
            if events.count == 3 { break }
        }
        #expect(events == ["1", "2", "3"])
        try await client.compact(4)
        options = WatchOptions()
        options.startRevision = 2
        var last: WatchResponse?
        for try await r in client.watch(.key("k"), options) { last = r }
        #expect(last?.canceled == true && last?.compactRevision == 4)
    }

    /// Periodic progress notifications, only for watchers that asked and are
    /// synced, at the interval of --experimental-watch-progress-notify-interval.
    @Test func progressNotificationsArriveAtTheInterval() async throws {
        let server = try ServerProcess(arguments: ["--experimental-watch-progress-notify-interval", "200ms"])
        defer { server.stop() }
        let client = try EtcdClient(endpoints: [server.endpoint])
        defer { client.close() }
        try await client.put("k", "v")
        var options = WatchOptions()
        options.progressNotify = true
        var iterator = client.watch(.key("k"), options).makeAsyncIterator()
        #expect(try await iterator.next()?.created == true)
        let progress = try #require(try await iterator.next())
        #expect(progress.isProgressNotification && progress.header.revision == 2)
    }

    @Test func resumableWatchSurvivesARestart() async throws {
        let first = try ServerProcess()
        let port = first.port
        let client = try EtcdClient(endpoints: [first.endpoint], timeout: 2)
        defer { client.close() }
        let stream = client.resumableWatch(.prefix("/r/"))
        var iterator = stream.makeAsyncIterator()
        #expect(try await iterator.next()?.created == true)
        for i in 0..<3 { try await client.put("/r/\(i)", "\(i)") }
        var seen: [String] = []
        while seen.count < 3, let r = try await iterator.next() { seen += r.events.map(\.kv.valueString) }
        first.kill()
        let second = try ServerProcess(arguments: [], dataDir: first.dataDir, port: port)
        defer {
            second.stop()
            first.removeDataDir()
        }
        // Writes while the watch reconnects, and after.
        for i in 3..<6 {
            while true {
                do { try await client.put("/r/\(i)", "\(i)"); break } catch { try await Task.sleep(nanoseconds: 50_000_000) }
            }
        }
        while seen.count < 6, let r = try await iterator.next() { seen += r.events.map(\.kv.valueString) }
        #expect(seen == ["0", "1", "2", "3", "4", "5"])
    }
}
