import Foundation
import Testing

/// etcd's runtime reconfiguration, done to swetcd with the real etcdctl
/// 3.4 as an operator does it: grow from one member, replace a failed one,
/// shrink; learners added, refused, promoted.
@Suite(.serialized) struct MembershipChangeTests {
    /// Members started one by one, each on its own peer port.
    final class GrowingCluster {
        var members: [String: ServerProcess] = [:]
        var peerPorts: [String: UInt16] = [:]
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-grow-\(UUID().uuidString)").path

        func dataDir(_ name: String) -> String { "\(base)-\(name)" }
        func peerURL(_ name: String) -> String { "http://127.0.0.1:\(peerPorts[name]!)" }
        func etcdctl(_ name: String) -> Etcdctl { Etcdctl(endpoint: members[name]!.endpoint) }

        /// The first member, alone (its peer URL given, so it can grow).
        func startFirst(_ name: String) throws {
            peerPorts[name] = try ReferenceEtcd.freePort()
            try start(name, cluster: "\(name)=\(peerURL(name))", state: "new")
        }

        func start(_ name: String, cluster: String, state: String) throws {
            members[name] = try ServerProcess(arguments: [
                "--name", name, "--listen-peer-urls", peerURL(name), "--initial-advertise-peer-urls", peerURL(name),
                "--initial-cluster", cluster, "--initial-cluster-state", state,
            ], dataDir: dataDir(name))
        }

        /// `member add` asked of `via` (again while etcd's health check
        /// says the cluster is not ready for it): the lines etcdctl printed.
        func add(_ name: String, via: String, learner: Bool = false) throws -> [String] {
            if peerPorts[name] == nil { peerPorts[name] = try ReferenceEtcd.freePort() }
            let deadline = Date().addingTimeInterval(20)
            while true {
                let r = try etcdctl(via).run(arguments: ["member", "add", name, "--peer-urls=\(peerURL(name))"] + (learner ? ["--learner"] : []))
                if r.status == 0 { return r.stdout.components(separatedBy: "\n") }
                guard r.stderr.contains("etcdserver: unhealthy cluster"), Date() < deadline else {
                    throw E2EError("member add \(name) via \(via): \(r)")
                }
                usleep(250_000)
            }
        }

        /// Adds `name` and starts it with what etcdctl printed, as etcd's
        /// guide says; returns its ID.
        @discardableResult
        func grow(_ name: String, via: String, learner: Bool = false) throws -> String {
            let lines = try add(name, via: via, learner: learner)
            let id = try #require(lines.first?.firstMatch(of: /^Member +([0-9a-f]+) added to cluster +[0-9a-f]+$/)?.1, "\(lines)")
            #expect(lines.count == 7 && lines[1].isEmpty && lines[2] == "ETCD_NAME=\"\(name)\"", "\(lines)")
            #expect(lines[4] == "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"\(peerURL(name))\"" && lines[5] == "ETCD_INITIAL_CLUSTER_STATE=\"existing\"")
            let cluster = try #require(lines[3].firstMatch(of: /^ETCD_INITIAL_CLUSTER="(.*)"$/)?.1, "\(lines)")
            #expect(cluster.split(separator: ",").contains { $0 == "\(name)=\(peerURL(name))" })
            try start(name, cluster: String(cluster), state: "existing")
            try waitStarted(name, via: via)
            return String(id)
        }

        /// Waits (bounded) until `via` lists `name` as started: it has
        /// published its name and client URLs through the log.
        func waitStarted(_ name: String, via: String) throws {
            let deadline = Date().addingTimeInterval(20)
            var list: [String] = []
            while Date() < deadline {
                list = try etcdctl(via).run("member", "list").lines
                if list.contains(where: { $0.contains(", started, \(name), ") }) { return }
                usleep(100_000)
            }
            throw E2EError("\(via) does not list \(name) as started: \(list)\n\(members[name]!.log.suffix(3000))")
        }

        func id(of name: String, via: String) throws -> String {
            let list = try etcdctl(via).run("member", "list").lines
            return try #require(list.first { $0.contains(", \(name), ") }?.split(separator: ",").first.map(String.init), "\(list)")
        }

        /// Waits (bounded) until `name` serves a linearizable read of `key`
        /// with `value`: it has a leader and has caught up.
        func waitServes(_ name: String, _ key: String, _ value: String, serializable: Bool = false) throws {
            let deadline = Date().addingTimeInterval(20)
            var last: CommandResult?
            while Date() < deadline {
                let r = try etcdctl(name).run(arguments: ["get", key, "--print-value-only"] + (serializable ? ["--consistency=s"] : []))
                if r.lines == [value] { return }
                last = r
                usleep(200_000)
            }
            throw E2EError("\(name) does not serve \(key)=\(value): \(String(describing: last))\n\(members[name]!.log.suffix(3000))")
        }

        func leads(_ name: String) throws -> Bool {
            let json = try etcdctl(name).run("endpoint", "status", "-w", "json").stdout
            let leader = json.firstMatch(of: /"leader":(\d+)/)?.1, me = json.firstMatch(of: /"member_id":(\d+)/)?.1
            return leader != nil && leader == me
        }

        func stop() {
            for m in members.values { m.stop() }
            for name in peerPorts.keys {
                try? FileManager.default.removeItem(atPath: dataDir(name))
                try? FileManager.default.removeItem(atPath: dataDir(name) + ".log")
            }
        }
    }

    /// Grow 1 → 3 → 5, replace a member that died (remove it, add one with
    /// a fresh data dir), shrink back to 3: every step as etcd's guide has
    /// it, every member serving every write after, a removed member gone for
    /// good.
    @Test func growReplaceAndShrink() throws {
        let c = GrowingCluster()
        defer { c.stop() }
        try c.startFirst("m1")
        #expect(try c.etcdctl("m1").run("put", "k1", "v1").stdout == "OK\n")
        for (i, name) in ["m2", "m3", "m4", "m5"].enumerated() {
            try c.grow(name, via: "m1")
            try c.waitServes(name, "k\(i + 1)", "v\(i + 1)")
            #expect(try c.etcdctl(name).run("put", "k\(i + 2)", "v\(i + 2)").stdout == "OK\n", "a put on \(name)")
        }
        #expect(try c.etcdctl("m3").run("member", "list").lines.count == 5)
        // m5 dies with its data; an operator removes it and adds m6.
        c.members["m5"]!.kill()
        let dead = try c.id(of: "m5", via: "m2")
        #expect(try c.etcdctl("m2").run("member", "remove", dead).stdout == "Member \(padded(dead)) removed from cluster \(padded(try clusterID(c, "m2")))\n")
        try c.grow("m6", via: "m2")
        try c.waitServes("m6", "k5", "v5")
        // Shrink to three: removed members that run stop, as etcd's do.
        for name in ["m6", "m4"] {
            let id = try c.id(of: name, via: "m1")
            let removed = try c.etcdctl("m1").run("member", "remove", id)
            #expect(removed.status == 0, "\(removed)")
            let ended = c.members[name]!.child.wait(seconds: 10)
            #expect(ended == .exited(0), "\(name) ended: \(String(describing: ended))")
            #expect(c.members[name]!.log.contains("the member has been permanently removed from the cluster"))
            c.members[name] = nil
        }
        #expect(try c.etcdctl("m1").run("put", "after", "shrink").stdout == "OK\n")
        for name in ["m1", "m2", "m3"] {
            try c.waitServes(name, "after", "shrink")
            let list = try c.etcdctl(name).run("member", "list").lines
            #expect(list.count == 3 && ["m1", "m2", "m3"].allSatisfy { n in list.contains { $0.contains(", started, \(n), ") } }, "\(name): \(list)")
            #expect(try c.etcdctl(name).run("get", "k", "--prefix", "--keys-only").lines == ["k1", "k2", "k3", "k4", "k5"])
        }
        // A removed member restarted with its data never rejoins.
        let m4Dir = c.dataDir("m4")
        let again = try ServerProcess(arguments: ["--name", "m4", "--listen-peer-urls", c.peerURL("m4"),
                                                  "--initial-advertise-peer-urls", c.peerURL("m4"),
                                                  "--initial-cluster", "m4=\(c.peerURL("m4"))"], dataDir: m4Dir)
        defer { again.stop() }
        let ended = again.child.wait(seconds: 15)
        #expect(ended != nil && again.log.contains("the member has been permanently removed from the cluster"), "\(again.log.suffix(2000))")
    }

    /// A learner: refused as etcd refuses one (promotion before it caught
    /// up, a second learner, writes and linearizable reads on it), it
    /// replicates, serves serializable reads, and is promoted through any
    /// member once in sync.
    @Test func learnersCatchUpBeforeTheyArePromoted() throws {
        let c = GrowingCluster()
        defer { c.stop() }
        try c.startFirst("m1")
        try c.grow("m2", via: "m1")
        #expect(try c.etcdctl("m1").run("put", "k", "before").stdout == "OK\n")
        try c.waitServes("m2", "k", "before")
        let lines = try c.add("m3", via: "m1", learner: true)
        let id = try #require(lines.first?.firstMatch(of: /^Member +([0-9a-f]+) added to cluster/)?.1).description
        let early = try c.etcdctl("m1").run("member", "promote", id)
        #expect(early.status != 0 && early.stderr.contains("Error: etcdserver: can only promote a learner member which is in sync with leader"),
                "\(early)")
        let second = try c.etcdctl("m2").run("member", "add", "m4", "--learner", "--peer-urls=http://127.0.0.1:1")
        #expect(second.stderr.contains("Error: etcdserver: too many learner members in cluster"), "\(second)")
        let cluster = try #require(lines[3].firstMatch(of: /^ETCD_INITIAL_CLUSTER="(.*)"$/)?.1)
        try c.start("m3", cluster: String(cluster), state: "existing")
        try c.waitServes("m3", "k", "before", serializable: true)
        try c.waitStarted("m3", via: "m1")
        for refused in [["put", "k", "x"], ["get", "k"], ["member", "list"]] {
            let r = try c.etcdctl("m3").run(arguments: refused)
            #expect(r.status != 0 && r.stderr.contains("Error: etcdserver: rpc not supported for learner"), "\(refused): \(r)")
        }
        #expect(try c.etcdctl("m1").run("member", "list").lines.contains { $0.hasPrefix("\(id), started, m3, ") && $0.hasSuffix(", true") })
        // Promoted through a follower (which asks the leader).
        let follower = try c.leads("m1") ? "m2" : "m1"
        let deadline = Date().addingTimeInterval(20)
        var promoted: CommandResult
        repeat {
            promoted = try c.etcdctl(follower).run("member", "promote", id)
            if promoted.status == 0 { break }
            usleep(250_000)
        } while Date() < deadline
        #expect(promoted.stdout == "Member \(padded(id)) promoted in cluster \(padded(try clusterID(c, "m1")))\n", "\(promoted)")
        #expect(try c.etcdctl("m3").run("put", "k", "voter").stdout == "OK\n")
        let again = try c.etcdctl("m1").run("member", "promote", id)
        #expect(again.stderr.contains("Error: etcdserver: can only promote a learner member"), "\(again)")
    }

    /// etcdctl's %16x.
    private func padded(_ hex: String) -> String { String(repeating: " ", count: max(0, 16 - hex.count)) + hex }

    private func clusterID(_ c: GrowingCluster, _ name: String) throws -> String {
        let json = try c.etcdctl(name).run("endpoint", "status", "-w", "json").stdout
        let id = try #require(json.firstMatch(of: /"cluster_id":(\d+)/).flatMap { UInt64($0.1) }, "\(json)")
        return String(id, radix: 16)
    }
}
