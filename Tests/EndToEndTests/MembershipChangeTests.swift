import EtcdClient
import Foundation
import Synchronization
import Testing
import TestSupport

/// etcd's runtime reconfiguration, done to swetcd with the real etcdctl
/// 3.4 as an operator does it: grow from one member, replace a failed one,
/// shrink; learners added, refused, promoted.
@Suite(.serialized) struct MembershipChangeTests {
    /// Members started one by one, each on its own peer port: swetcd's,
    /// or (`etcd`) real etcd 3.4 members to compare with.
    final class GrowingCluster {
        var members: [String: any MemberProcess] = [:]
        var peerPorts: [String: UInt16] = [:]
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-grow-\(UUID().uuidString)").path
        let etcd: Bool

        init(etcd: Bool = false) { self.etcd = etcd }

        func dataDir(_ name: String) -> String { "\(base)-\(name)" }
        func peerURL(_ name: String) -> String { "http://127.0.0.1:\(peerPorts[name]!)" }
        func etcdctl(_ name: String) -> Etcdctl { Etcdctl(endpoint: members[name]!.endpoint) }

        /// The first member, alone (its peer URL given, so it can grow).
        func startFirst(_ name: String) throws {
            peerPorts[name] = try ReferenceEtcd.freePort()
            try start(name, cluster: "\(name)=\(peerURL(name))", state: "new")
        }

        func start(_ name: String, cluster: String, state: String) throws {
            let flags = ["--name", name, "--listen-peer-urls", peerURL(name), "--initial-advertise-peer-urls", peerURL(name),
                         "--initial-cluster", cluster, "--initial-cluster-state", state]
            members[name] = etcd ? try EtcdMemberProcess(arguments: flags, dataDir: dataDir(name))
                : try ServerProcess(arguments: flags, dataDir: dataDir(name))
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

        /// Starts a member `add` added, with the cluster it printed (its
        /// last add's output is not kept: the list as `via` has it now).
        func startAdded(_ name: String, via: String) throws {
            let list = try etcdctl(via).run("member", "list").lines
            let cluster = list.compactMap { line -> String? in
                let f = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                guard f.count == 6 else { return nil }
                return "\(f[2].isEmpty ? name : f[2])=\(f[3])"
            }.joined(separator: ",")
            try start(name, cluster: cluster, state: "existing")
            try waitStarted(name, via: via)
        }

        /// Adds `name` and starts it with what etcdctl printed, as etcd's
        /// guide says; returns its ID.
        /// `firstRead`: a key and value the new member must serve to its
        /// very first (serializable) read: it serves nobody before it has
        /// caught up to its own publish entry.
        @discardableResult
        func grow(_ name: String, via: String, learner: Bool = false, firstRead: (String, String)? = nil) throws -> String {
            let lines = try add(name, via: via, learner: learner)
            let id = try #require(lines.first?.firstMatch(of: /^Member +([0-9a-f]+) added to cluster +[0-9a-f]+$/)?.1, "\(lines)")
            #expect(lines.count == 7 && lines[1].isEmpty && lines[2] == "ETCD_NAME=\"\(name)\"", "\(lines)")
            #expect(lines[4] == "ETCD_INITIAL_ADVERTISE_PEER_URLS=\"\(peerURL(name))\"" && lines[5] == "ETCD_INITIAL_CLUSTER_STATE=\"existing\"")
            let cluster = try #require(lines[3].firstMatch(of: /^ETCD_INITIAL_CLUSTER="(.*)"$/)?.1, "\(lines)")
            #expect(cluster.split(separator: ",").contains { $0 == "\(name)=\(peerURL(name))" })
            try start(name, cluster: String(cluster), state: "existing")
            if let (key, value) = firstRead {
                let r = try etcdctl(name).run("get", key, "--consistency=s", "--print-value-only")
                #expect(r.lines == [value], "the first read of \(name), just started: \(r)")
            }
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

        /// A member's ID as `via` lists it (`unstarted`: the one not yet
        /// started, which has no name).
        func id(of name: String, via: String, unstarted: Bool = false) throws -> String {
            let list = try etcdctl(via).run("member", "list").lines
            let line = list.first { unstarted ? $0.contains(", unstarted, ") : $0.contains(", \(name), ") }
            return try #require(line?.split(separator: ",").first.map(String.init), "\(list)")
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
        try c.grow("m6", via: "m2", firstRead: ("k5", "v5"))
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
        // etcd's log lines for each change, which operators grep for.
        let m1Log = c.members["m1"]!.log
        #expect(m1Log.contains("\"msg\":\"removed member\"") && m1Log.contains("\"removed-remote-peer-id\":\"\(dead)\""), "\(m1Log.suffix(3000))")
        #expect(m1Log.contains("\"msg\":\"added member\"") && m1Log.contains("\"added-peer-is-learner\":\"false\""))
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

    /// The same reconfiguration steps against swetcd and against real etcd
    /// 3.4 members print the same (member IDs, cluster IDs and ports
    /// masked), exit alike, and refuse alike.
    @Test func etcdctlPrintsWhatItPrintsAgainstEtcd() throws {
        guard FileManager.default.isExecutableFile(atPath: EtcdMemberProcess.executable) else {
            Issue.record("\(EtcdMemberProcess.executable) not found: apt-get install etcd-server (scripts/install-deps.sh does)")
            return
        }
        let ours = try transcript(GrowingCluster())
        let theirs = try transcript(GrowingCluster(etcd: true))
        // The steps did what they say (equal transcripts of failures would
        // prove little).
        #expect(ours.filter { $0.hasPrefix("Member <id> added to cluster <id>") }.count == 6)
        #expect(ours.contains("move-leader -> 0\nLeadership transferred from <id> to <id>\n"), "\(ours)")
        #expect(["m6", "m4", "m7"].allSatisfy { ours.contains("\($0) ended: Optional(exit status 0)") }, "\(ours)")
        #expect(ours.last == "get k --print-value-only -> 0\nmoved\n", "\(ours)")
        #expect(ours.count == theirs.count)
        for (a, b) in zip(ours, theirs) { #expect(a == b) }
        if ours != theirs { print("swetcd:\n\(ours.joined(separator: "\n"))\netcd:\n\(theirs.joined(separator: "\n"))") }
    }

    /// Each step: the command, its exit status and what it printed, with
    /// what differs between two runs masked.
    private func transcript(_ c: GrowingCluster) throws -> [String] {
        defer { c.stop() }
        var out: [String] = []
        func mask(_ text: String) -> String {
            var t = text
            for (name, port) in c.peerPorts { t = t.replacingOccurrences(of: "127.0.0.1:\(port)", with: "<peer \(name)>") }
            for (name, m) in c.members { t = t.replacingOccurrences(of: m.endpoint, with: "<client \(name)>") }
            t = t.replacing(/\b[0-9a-f]{10,16}\b/, with: "<id>").replacing(/\ +<id>/, with: " <id>")
            // Members come in ID order: sort what lists them.
            var lines = t.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
                guard let list = line.firstMatch(of: /^ETCD_INITIAL_CLUSTER="(.*)"$/)?.1 else { return String(line) }
                return "ETCD_INITIAL_CLUSTER=\"" + list.split(separator: ",").sorted().joined(separator: ",") + "\""
            }
            if lines.allSatisfy({ $0.isEmpty || $0.hasPrefix("<id>, ") }) { lines.sort() }
            return lines.joined(separator: "\n")
        }
        func step(_ via: String, _ arguments: String...) throws {
            // A change refused while a peer has been connected under 5 s is
            // asked again (on both, how soon that is depends on timing).
            var r = try c.etcdctl(via).run(arguments: arguments)
            let deadline = Date().addingTimeInterval(20)
            while r.stderr.contains("etcdserver: unhealthy cluster") && Date() < deadline {
                usleep(250_000)
                r = try c.etcdctl(via).run(arguments: arguments)
            }
            // etcdctl's own retry log lines carry addresses and times.
            let errors = r.stderr.split(separator: "\n").filter { !$0.hasPrefix("{") }.joined(separator: "\n")
            out.append("\(mask(arguments.joined(separator: " "))) -> \(r.status)\n\(mask(r.stdout))\(mask(errors))")
        }
        try c.startFirst("m1")
        try step("m1", "put", "k1", "v1")
        // Grow 1 → 3 → 5.
        for name in ["m2", "m3", "m4", "m5"] {
            out.append(mask(try c.add(name, via: "m1").joined(separator: "\n")))
            try c.startAdded(name, via: "m1")
            if name == "m3" || name == "m5" { try step("m1", "member", "list") }
        }
        // m5 fails for good: removed, replaced by m6 with a fresh data dir.
        c.members["m5"]!.kill()
        c.members["m5"] = nil
        try step("m2", "member", "remove", try c.id(of: "m5", via: "m2"))
        out.append(mask(try c.add("m6", via: "m2").joined(separator: "\n")))
        try c.startAdded("m6", via: "m2")
        try step("m2", "member", "list")
        // Shrink back to three: a removed member that runs stops.
        for name in ["m6", "m4"] {
            try step("m1", "member", "remove", try c.id(of: name, via: "m1"))
            let ended = c.members[name]!.child.wait(seconds: 15)
            out.append("\(name) ended: \(String(describing: ended))")
            c.members[name] = nil
        }
        try step("m1", "member", "list")
        // A learner: refused until in sync, then promoted.
        let learner = try c.add("m7", via: "m1", learner: true)
        out.append(mask(learner.joined(separator: "\n")))
        let m7 = try c.id(of: "", via: "m1", unstarted: true)
        try step("m1", "member", "promote", m7)
        try step("m2", "member", "add", "m8", "--learner", "--peer-urls=http://127.0.0.1:1")
        try step("m2", "member", "add", "m8", "--peer-urls=\(c.peerURL("m1"))")
        try step("m2", "member", "remove", "1234")
        try step("m2", "member", "update", try c.id(of: "m2", via: "m1"), "--peer-urls=\(c.peerURL("m1"))")
        let cluster = try #require(learner[3].firstMatch(of: /^ETCD_INITIAL_CLUSTER="(.*)"$/)?.1)
        try c.start("m7", cluster: String(cluster), state: "existing")
        try c.waitServes("m7", "k1", "v1", serializable: true)
        try c.waitStarted("m7", via: "m1")
        try step("m7", "put", "k", "x")
        try step("m7", "get", "k1", "--consistency=s")
        try step("m1", "member", "list")
        let deadline = Date().addingTimeInterval(20)
        while try c.etcdctl("m1").run("member", "promote", m7).status != 0 && Date() < deadline { usleep(250_000) }
        try step("m1", "member", "list")
        try step("m1", "member", "promote", m7)
        try step("m7", "put", "k", "voter")
        // Leadership to a follower (etcdctl finds the leader among the
        // endpoints it is given).
        let all = Etcdctl(endpoint: ["m1", "m2", "m3", "m7"].map { c.members[$0]!.endpoint }.joined(separator: ","))
        let follower = try ["m2", "m3", "m7"].first { try !c.leads($0) } ?? "m1"
        let moved = try all.run("move-leader", try c.id(of: follower, via: "m1"))
        out.append("move-leader -> \(moved.status)\n\(mask(moved.stdout))")
        try step(follower, "put", "k", "moved")
        try step("m2", "member", "remove", m7)
        let ended = c.members["m7"]!.child.wait(seconds: 15)
        out.append("m7 ended: \(String(describing: ended))")
        c.members["m7"] = nil
        try step("m1", "member", "list")
        try step("m2", "get", "k", "--print-value-only")
        return out
    }
}

/// A member of a test cluster: ours or etcd's.
protocol MemberProcess: AnyObject {
    var endpoint: String { get }
    var log: String { get }
    var child: ChildProcess! { get }
    func stop()
    func kill()
}

extension ServerProcess: MemberProcess {}

/// A real etcd 3.4 member (Debian's etcd-server) with the flags given, on a
/// free client port, its log in `<data dir>.log`.
final class EtcdMemberProcess: MemberProcess {
    static let executable = "/usr/bin/etcd"
    private(set) var child: ChildProcess!
    let endpoint: String
    let logPath: String

    init(arguments: [String], dataDir: String) throws {
        let port = try ReferenceEtcd.freePort()
        endpoint = "127.0.0.1:\(port)"
        logPath = dataDir + ".log"
        child = try ChildProcess(Self.executable, ["--data-dir", dataDir, "--listen-client-urls", "http://\(endpoint)",
                                                   "--advertise-client-urls", "http://\(endpoint)"] + arguments,
                                 stderr: .file(logPath))
        // Its client port is bound before it is ready: bounded, as ours.
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            if (try? httpGet(endpoint: endpoint, path: "/version", timeoutSeconds: 1)) != nil { return }
            guard child.isRunning else { break }
            usleep(50_000)
        }
        kill()
        throw E2EError("etcd did not start; its log:\n\(log.suffix(3000))")
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
    func stop() { _ = child.terminate(graceSeconds: 10) }
    func kill() {
        child.signal(SIGKILL)
        child.waitUntilExit()
    }
}

/// Disaster recovery as etcd's guide has it: a quorum lost for good.
@Suite(.serialized) struct LostQuorumTests {
    /// A three-member cluster under writes loses two members and their
    /// data. The last snapshot restored into a brand new three-member
    /// cluster holds every key of it at its revision on all three (same
    /// HashKV); the survivor, restarted with --force-new-cluster, holds
    /// every write it acknowledged, and grows again.
    @Test func aSnapshotOrTheSurvivorBringsTheClusterBack() async throws {
        let c = try ClusterTests.Cluster()
        defer { c.stop() }
        _ = try c.leader()
        let client = try EtcdClient(endpoints: [c.members[0]!.endpoint])
        defer { client.close() }
        // Writes before the snapshot, then more while it is taken and
        // until two members die.
        for i in 0..<50 { _ = try await client.put("load/\(i)", "v\(i)") }
        let written = Locked(50)
        let writer = Task { () -> [String] in
            var acknowledged = (0..<50).map { "load/\($0)" }
            for i in 50..<1_000_000 {
                guard (try? await client.put("load/\(i)", "v\(i)")) != nil else { break }
                acknowledged.append("load/\(i)")
                written.withLock { $0 = i + 1 }
            }
            return acknowledged
        }
        let snapshot = c.dataDirs[0] + "-snapshot.db"
        defer { try? FileManager.default.removeItem(atPath: snapshot) }
        #expect(try c.etcdctl(0).run("snapshot", "save", snapshot).status == 0)
        let after = written.withLock { $0 }
        for _ in 0..<200 where written.withLock({ $0 }) < after + 20 { try await Task.sleep(nanoseconds: 50_000_000) }
        for i in [1, 2] {
            c.members[i]!.kill()
            c.members[i] = nil
            try FileManager.default.removeItem(atPath: c.dataDirs[i])
        }
        let acknowledged = await writer.value
        #expect(acknowledged.count >= after + 20, "writes acknowledged: \(acknowledged.count), \(after) at the snapshot")

        // A new cluster from the snapshot: each member restored with its
        // own name and peer URL, started without the bootstrap flags.
        let fresh = MembershipChangeTests.GrowingCluster()
        defer { fresh.stop() }
        let names = ["n1", "n2", "n3"]
        for n in names { fresh.peerPorts[n] = try ReferenceEtcd.freePort() }
        let cluster = names.map { "\($0)=\(fresh.peerURL($0))" }.joined(separator: ",")
        for n in names {
            let r = try runCommand(ServerProcess.executable, ["snapshot", "restore", snapshot, "--name", n, "--initial-cluster", cluster,
                                                              "--initial-cluster-token", "restored", "--initial-advertise-peer-urls",
                                                              fresh.peerURL(n), "--data-dir", fresh.dataDir(n)])
            #expect(r.status == 0, "\(r)")
        }
        for n in names {
            fresh.members[n] = try ServerProcess(arguments: ["--name", n, "--listen-peer-urls", fresh.peerURL(n)], dataDir: fresh.dataDir(n))
        }
        try fresh.waitServes("n3", "load/0", "v0")
        let list = try fresh.etcdctl("n1").run("member", "list").lines
        #expect(list.count == 3 && names.allSatisfy { n in list.contains { $0.contains(", \(n), \(fresh.peerURL(n)), ") } }, "\(list)")
        // Every key as the old cluster had it at the snapshot: the survivor
        // (alone, serializable) still holds them at the same revisions.
        let restored = try keys(fresh.etcdctl("n2"), serializable: false)
        let survivor = try keys(c.etcdctl(0), serializable: true)
        #expect(!restored.isEmpty && restored.count <= acknowledged.count + 1)
        for (key, kv) in restored { #expect(survivor[key] == kv, "\(key)") }
        var hashes = Set<String>()
        for n in names {
            let h = try fresh.etcdctl(n).run("endpoint", "hashkv", "-w", "json").stdout
            hashes.insert(try #require(h.firstMatch(of: /"hash":(\d+)/)?.1).description)
        }
        #expect(hashes.count == 1, "HashKV differs: \(hashes)")
        #expect(try fresh.etcdctl("n1").run("put", "after", "restore").stdout == "OK\n")

        // The survivor forced into a new cluster of one: every write it
        // acknowledged, and room to grow.
        c.members[0]!.kill()
        c.members[0] = try ServerProcess(arguments: c.flags(0) + ["--force-new-cluster"], dataDir: c.dataDirs[0])
        let forced = try keys(c.etcdctl(0), serializable: false)
        #expect(acknowledged.allSatisfy { forced[$0] != nil }, "\(acknowledged.filter { forced[$0] == nil }.prefix(5)) lost")
        #expect(try c.etcdctl(0).run("member", "list").lines.count == 1)
        #expect(try c.etcdctl(0).run("put", "forced", "yes").stdout == "OK\n")
        let add = try c.etcdctl(0).run("member", "add", "m4", "--peer-urls=http://127.0.0.1:\(try ReferenceEtcd.freePort())")
        #expect(add.status == 0 && add.stdout.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""), "\(add)")
    }

    /// Each key with its value and revisions, from `get load/ --prefix`.
    private func keys(_ etcdctl: Etcdctl, serializable: Bool) throws -> [String: String] {
        let r = try etcdctl.run(arguments: ["get", "load/", "--prefix", "-w", "fields"] + (serializable ? ["--consistency=s"] : []))
        #expect(r.status == 0, "\(r)")
        var out: [String: String] = [:]
        var key = "", fields: [String] = []
        for line in r.lines {
            if line.hasPrefix("\"Key\" : ") { key = String(line.dropFirst(8)); fields = [] }
            if line.hasPrefix("\"CreateRevision\"") || line.hasPrefix("\"ModRevision\"") || line.hasPrefix("\"Value\"") {
                fields.append(line)
                if line.hasPrefix("\"Value\"") { out[key.trimmingCharacters(in: CharacterSet(charactersIn: "\""))] = fields.joined(separator: " ") }
            }
        }
        return out
    }
}
