import EtcdClient
import Foundation
import Testing
import TestSupport

/// Examples/PodWatcher against a member restarted under it: its cache ends
/// equal to the server's pods and its event log is the server's history
/// after its list, each change once, in order; a compacted resume point
/// makes it list again.
@Suite(.serialized) struct PodWatcherTests {
    static var binary: String {
        URL(fileURLWithPath: ServerProcess.executable).deletingLastPathComponent().appendingPathComponent("PodWatcher").path
    }

    /// The watcher process, its standard output collected.
    final class Watcher {
        let child: ChildProcess
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("podwatcher-\(UUID().uuidString)").path

        init(endpoint: String) throws {
            // Standard input /dev/null, as under a service manager.
            child = try ChildProcess(PodWatcherTests.binary, ["--endpoints", endpoint, "--page-size", "100"], stdout: .file(path))
        }

        var lines: [String] { ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) }

        func waitFor(_ done: ([String]) -> Bool, seconds: Double = 20) -> Bool {
            let deadline = Date().addingTimeInterval(seconds)
            while Date() < deadline {
                if done(lines) { return true }
                usleep(20_000)
            }
            return false
        }

        /// Ends it (SIGTERM, as a service manager does) and returns
        /// everything it printed; it must exit 0 within 10 s.
        func stop() -> [String] {
            child.signal(SIGTERM)
            let ended = child.wait(seconds: 10)
            #expect(ended == .exited(0), "PodWatcher did not stop cleanly on SIGTERM: \(ended.map { "\($0)" } ?? "still running")")
            if ended == nil { child.terminate() }
            defer { try? FileManager.default.removeItem(atPath: path) }
            return lines
        }
    }

    /// Puts and deletes pods until told to stop, retrying while the server
    /// is away.
    static func write(_ client: EtcdClient, counting done: WriteCount? = nil,
                      until stop: @escaping @Sendable () -> Bool) async {
        var rng = SystemRandomNumberGenerator()
        var n = 0
        while !stop() {
            let pod = "/registry/pods/p\(Int.random(in: 0..<300, using: &rng))"
            do {
                if Int.random(in: 0..<4, using: &rng) == 0 {
                    try await client.delete(.key(Array(pod.utf8)))
                } else {
                    try await client.put(pod, "v\(n)")
                }
                n += 1
                done?.add()
            } catch {
                try? await Task.sleep(nanoseconds: 50_000_000)
            }
        }
    }

    /// The server's history of the prefix from `revision` through `last`:
    /// `event <rev> PUT|DELETE <key>` lines.
    static func history(_ client: EtcdClient, from revision: Int64, through last: Int64) async throws -> [String] {
        guard revision <= last else { return [] }
        var lines: [String] = []
        var options = WatchOptions()
        options.startRevision = revision
        for try await r in client.watch(.prefix("/registry/pods/"), options) {
            for e in r.events {
                lines.append("event \(e.kv.modRevision) \(e.kind == .put ? "PUT" : "DELETE") \(e.kv.keyString)")
            }
            if let rev = r.events.last?.kv.modRevision, rev >= last { break }
        }
        return lines
    }

    static func state(_ client: EtcdClient) async throws -> (pods: [String], revision: Int64) {
        let all = try await client.get(.prefix("/registry/pods/"))
        return (all.kvs.map { "cache \($0.keyString) \($0.valueString)" }, all.header.revision)
    }

    @Test func twoRestartsLoseAndRepeatNothing() async throws {
        let owner = try ServerProcess()  // owns the data dir: kept to the end
        var server = owner
        let dataDir = owner.dataDir, port = owner.port
        defer { server.stop(); withExtendedLifetime(owner) {} }
        let client = try EtcdClient(endpoints: [server.endpoint], timeout: 2)
        defer { client.close() }
        for i in 0..<250 { try await client.put("/registry/pods/p\(i)", "initial") }  // three pages

        let watcher = try Watcher(endpoint: server.endpoint)
        #expect(watcher.waitFor { $0.contains { $0.hasPrefix("list ") } }, "it lists")
        let stop = StopFlag(), written = WriteCount()
        let writer = Task { await Self.write(client, counting: written, until: { stop.isSet }) }
        for _ in 0..<2 {
            try await written.wait(forMore: 25)
            server.stop()
            server = try ServerProcess(dataDir: dataDir, port: port)
        }
        try await written.wait(forMore: 25)
        stop.set()
        await writer.value

        let (pods, last) = try await Self.state(client)
        #expect(watcher.waitFor { $0.contains { $0.hasPrefix("event \(last) ") } }, "it catches up to revision \(last)")
        let lines = watcher.stop()
        let lists = lines.filter { $0.hasPrefix("list ") }
        #expect(lists.count == 1 && lists.first?.hasSuffix(" 250") == true, "one list of 250 pods: \(lists)")
        try await Self.expectLogIsTheHistory(lines, client, pods: pods, last: last)
    }

    /// The watcher's events after its (first) list are the server's
    /// history through `last`, each once and in order, and its cache the
    /// server's pods.
    static func expectLogIsTheHistory(_ lines: [String], _ client: EtcdClient, pods: [String], last: Int64) async throws {
        let listRevision = Int64(lines.first { $0.hasPrefix("list ") }?.split(separator: " ")[1] ?? "") ?? 0
        let events = lines.filter { $0.hasPrefix("event ") }
        let expected = try await history(client, from: listRevision + 1, through: last)
        #expect(events.count > 20, "the writer wrote while the watcher watched")
        let firstDifference = zip(events, expected).enumerated().first { $0.element.0 != $0.element.1 }
        #expect(events == expected, """
            \(events.count) events seen, \(expected.count) in the history (list at \(listRevision), last \(last)); \
            first difference: \(firstDifference.map { "#\($0.offset) \($0.element.0) vs \($0.element.1)" } ?? "none"); \
            seen ends with \(events.suffix(2)), history with \(expected.suffix(2))
            """)
        let cache = lines.filter { $0.hasPrefix("cache ") }
        #expect(cache == pods, "the cache (\(cache.count) pods) is the server's state (\(pods.count) pods): \(cache.prefix(3)) vs \(pods.prefix(3))")
    }

    /// The same against three members: the member the watcher and the
    /// writer talk to first is killed (kill -9); they fail over to the
    /// others, and the watcher's log is still the history, its cache the
    /// pods.
    @Test func aKilledMemberOfAClusterLosesAndRepeatsNothing() async throws {
        let cluster = try ClusterTests.Cluster()
        defer { cluster.stop() }
        _ = try cluster.leader()
        let endpoints = cluster.members.map { $0!.endpoint }
        let client = try EtcdClient(endpoints: endpoints, timeout: 2)
        defer { client.close() }
        for i in 0..<250 { try await client.put("/registry/pods/p\(i)", "initial") }
        let watcher = try Watcher(endpoint: endpoints.joined(separator: ","))
        #expect(watcher.waitFor { $0.contains { $0.hasPrefix("list ") } }, "it lists")
        let stop = StopFlag(), written = WriteCount()
        let writer = Task { await Self.write(client, counting: written, until: { stop.isSet }) }
        try await written.wait(forMore: 25)
        cluster.members[0]!.kill()
        cluster.members[0] = nil
        try await written.wait(forMore: 25)
        stop.set()
        await writer.value

        let (pods, last) = try await Self.state(client)
        #expect(watcher.waitFor { $0.contains { $0.hasPrefix("event \(last) ") } }, "it catches up to revision \(last)")
        let lines = watcher.stop()
        try await Self.expectLogIsTheHistory(lines, client, pods: pods, last: last)
    }

    @Test func aCompactedResumePointMeansARelist() async throws {
        let owner = try ServerProcess()
        var server = owner
        let dataDir = owner.dataDir, port = owner.port
        defer { server.stop(); withExtendedLifetime(owner) {} }
        let client = try EtcdClient(endpoints: [server.endpoint], timeout: 2)
        defer { client.close() }
        try await client.put("/registry/pods/a", "1")
        let watcher = try Watcher(endpoint: server.endpoint)
        #expect(watcher.waitFor { $0.contains { $0.hasPrefix("list ") } })
        // While the watcher is cut off (the member serves another port
        // meanwhile), history moves on and is compacted.
        server.kill()
        let offline = try await Task.detached { () -> Int64 in
            let s = try ServerProcess(dataDir: dataDir)
            defer { s.kill() }
            let c = try EtcdClient(endpoints: [s.endpoint], timeout: 2)
            defer { c.close() }
            for i in 0..<5 { try await c.put("/registry/pods/b\(i)", "x") }
            try await c.delete(.key(Array("/registry/pods/a".utf8)))
            let revision = try await c.get("/registry/pods/a").header.revision
            try await c.compact(revision, physical: true)
            return revision
        }.value
        _ = offline
        server = try ServerProcess(dataDir: dataDir, port: port)
        let (pods, _) = try await Self.state(client)
        #expect(watcher.waitFor { $0.filter { $0.hasPrefix("list ") }.count == 2 }, "it lists again")
        let lines = watcher.stop()
        #expect(lines.filter { $0.hasPrefix("cache ") } == pods, "\(lines)")
    }
}

final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}

/// Writes done so far. The tests wait for a number of them rather than for
/// a time: on a loaded machine (the whole suite on two cores) a fixed
/// window saw as few as 20 writes.
final class WriteCount: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    var count: Int { lock.lock(); defer { lock.unlock() }; return value }
    func add() { lock.lock(); value += 1; lock.unlock() }

    /// Until `n` more writes are done (at most 60 s: a writer that cannot
    /// write then fails the test's later checks).
    func wait(forMore n: Int) async throws {
        let target = count + n
        let deadline = ContinuousClock.now.advanced(by: .seconds(60))
        while count < target && ContinuousClock.now < deadline { try await Task.sleep(nanoseconds: 20_000_000) }
    }
}
