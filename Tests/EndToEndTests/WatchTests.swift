import Foundation
import Testing

/// etcdctl watch prints the same against swetcd as against a real etcd 3.4
/// for the same scripted changes.
@Suite struct WatchTests {
    /// Runs `script` against a fresh server with watchers started by `watch`
    /// (their etcdctl arguments), and returns each watcher's output.
    func outputs(on endpoint: String, watches: [[String]], expectLines: [Int],
                 script: (Etcdctl) throws -> Void, startAfter: ((Etcdctl) throws -> Void)? = nil) throws -> [String] {
        let etcdctl = Etcdctl(endpoint: endpoint)
        try startAfter?(etcdctl)
        let watchers = try watches.map { try BackgroundEtcdctl(endpoint: endpoint, $0) }
        usleep(300_000)  // let the watches be created
        try script(etcdctl)
        return zip(watchers, expectLines).map { $0.finish(expectingLines: $1) }
    }

    static func podScript(_ e: Etcdctl) throws {
        try e.run("put", "/registry/pods/default/a", "v1")
        try e.run("put", "/registry/pods/default/b", "v1")
        try e.run("put", "/registry/pods/default/a", "v2")
        try e.run("put", "/registry/services/x", "s")
        let txn = try e.run("txn", "-i", input: """
            value("/registry/pods/default/a") = "v2"

            put /registry/pods/default/c v1
            del /registry/pods/default/b



            """)
        guard txn.stdout.contains("SUCCESS") else { throw E2EError("the script's txn failed: \(txn)") }
        try e.run("del", "/registry/pods/", "--prefix")
    }

    func compare(watches: [[String]], expectLines: [Int], before: ((Etcdctl) throws -> Void)? = nil,
                 sourceLocation: SourceLocation = #_sourceLocation) throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let reference = try ReferenceEtcd()
        defer { reference.stop() }
        let ours = try outputs(on: server.endpoint, watches: watches, expectLines: expectLines, script: Self.podScript, startAfter: before)
        let theirs = try outputs(on: reference.endpoint, watches: watches, expectLines: expectLines, script: Self.podScript, startAfter: before)
        for (o, t) in zip(ours, theirs) {
            #expect(o == t, "swetcd:\n\(o)\netcd:\n\(t)", sourceLocation: sourceLocation)
            #expect(!o.isEmpty, sourceLocation: sourceLocation)
        }
    }

    @Test func prefixWatchPrintsWhatEtcdPrints() throws {
        try compare(watches: [["watch", "--prefix", "/registry/pods/"]], expectLines: [21])
    }

    @Test func prevKVAndHistoryFromARevision() throws {
        try compare(watches: [["watch", "--prefix", "/registry/pods/", "--prev-kv"],
                              ["watch", "--prefix", "/registry/", "--rev=3"],
                              ["watch", "/registry/pods/default/a"]],
                    expectLines: [31, 24, 9],
                    before: { e in try e.run("put", "/registry/pods/default/a", "v0") })
    }

    @Test func interactiveWatchWithSeveralWatches() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let reference = try ReferenceEtcd()
        defer { reference.stop() }
        func run(_ endpoint: String) throws -> String {
            let w = try BackgroundEtcdctl(endpoint: endpoint, ["watch", "-i"])
            w.type("watch /registry/pods/default/a")
            w.type("watch --prefix /registry/services/")
            usleep(300_000)
            try Self.podScript(Etcdctl(endpoint: endpoint))
            return w.finish(expectingLines: 12)
        }
        let ours = try run(server.endpoint), theirs = try run(reference.endpoint)
        #expect(ours == theirs, "swetcd:\n\(ours)\netcd:\n\(theirs)")
        #expect(ours.contains("/registry/services/x"))
    }

    @Test func watchingACompactedRevisionSaysSo() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let reference = try ReferenceEtcd()
        defer { reference.stop() }
        func run(_ endpoint: String) throws -> String {
            let e = Etcdctl(endpoint: endpoint)
            for v in ["1", "2", "3"] { try e.run("put", "k", v) }
            try e.run("compact", "3")
            let w = try BackgroundEtcdctl(endpoint: endpoint, ["watch", "k", "--rev=2"])
            return w.finish(expectingLines: 1)
        }
        let ours = try run(server.endpoint), theirs = try run(reference.endpoint)
        #expect(ours == theirs, "swetcd:\n\(ours)\netcd:\n\(theirs)")
        #expect(ours.contains("compacted"), "\(ours)")
    }

    /// etcd #15220: a requested progress response never runs ahead of the
    /// events still owed on its stream.
    @Test func progressResponseWaitsForTheHistoryOwed() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let r = try runPython("watch_streams.py", ["progress-after-history", server.endpoint])
        #expect(r.status == 0 && r.stdout.hasPrefix("progress "), "\(r)")
    }

    /// etcd #17529: a stream with many prev_kv watchers is not starved and
    /// does not delay another stream.
    @Test func manyPrevKVWatchersOnOneStreamAreNotStarved() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let r = try runPython("watch_streams.py", ["many-prevkv-watchers", server.endpoint])
        #expect(r.status == 0 && r.stdout.contains("got all 200 events"), "\(r)")
    }

    /// A client that is done sending still gets its events, against
    /// swetcd as against a real etcd 3.4.
    @Test func aHalfClosedStreamKeepsDelivering() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let reference = try ReferenceEtcd()
        defer { reference.stop() }
        for endpoint in [server.endpoint, reference.endpoint] {
            let r = try runPython("watch_streams.py", ["half-closed", endpoint])
            #expect(r.status == 0 && r.stdout == "event after half-close\n", "\(endpoint): \(r)")
        }
    }

    @Test func largeResponsesAreFragmentedWhenAsked() throws {
        let server = try ServerProcess(arguments: ["--max-request-bytes", "2048"])
        defer { server.stop() }
        let r = try runPython("watch_streams.py", ["fragments", server.endpoint])
        #expect(r.status == 0 && r.stdout.hasSuffix(" fragments\n"), "\(r)")
    }

    @Test func pythonEtcd3WatchPrefix() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let r = try runPython("etcd3_watch.py", [server.endpoint])
        #expect(r.status == 0 && r.stdout.contains("watch ok"), "\(r)")
    }
}
