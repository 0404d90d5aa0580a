import EtcdClient
import Foundation
import Synchronization
import Testing
import TestSupport

/// Three members of a cluster, for fault tests: each in a network
/// namespace of its own, joined by a bridge, when the test runs as root
/// and `ip netns` works (then a partition takes a member's link down: it
/// hears neither its peers nor its clients); otherwise on 127.0.0.1, where
/// partitions are replaced by pauses. Every process, namespace and link
/// it makes goes in `stop()`.
final class FaultCluster {
    let inNamespaces: Bool
    private let tag: String
    private let subnet: String
    private(set) var hosts: [String] = []
    private(set) var clientPorts: [UInt16] = []
    private(set) var peerPorts: [UInt16] = []
    let dataDirs: [String]
    private(set) var processes: [ChildProcess?] = [nil, nil, nil]
    private(set) var memberIDs: [UInt64] = [0, 0, 0]
    private static let ip = "/usr/sbin/ip"

    init() throws {
        let pid = Int(getpid())
        tag = "\(pid % 100_000)"
        subnet = "10.213.\(pid % 250 + 1)"
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("swetcd-fault-\(UUID().uuidString)").path
        dataDirs = (0..<3).map { "\(base)-\($0)" }
        inNamespaces = getuid() == 0 && FileManager.default.isExecutableFile(atPath: Self.ip) && Self.makeNetwork(tag: tag, subnet: subnet)
        if inNamespaces {
            hosts = (0..<3).map { "\(subnet).\($0 + 2)" }
            clientPorts = [2379, 2379, 2379]
            peerPorts = [2380, 2380, 2380]
        } else {
            hosts = ["127.0.0.1", "127.0.0.1", "127.0.0.1"]
            clientPorts = try (0..<3).map { _ in try ReferenceEtcd.freePort() }
            peerPorts = try (0..<3).map { _ in try ReferenceEtcd.freePort() }
        }
        do {
            for i in 0..<3 { try start(i) }
        } catch {
            stop()
            throw error
        }
    }

    private static func namespace(_ tag: String, _ i: Int) -> String { "swetcd-fault-\(tag)-\(i)" }
    private static func hostLink(_ tag: String, _ i: Int) -> String { "swh\(tag)x\(i)" }
    private static func bridge(_ tag: String) -> String { "swb\(tag)" }

    /// A bridge with the host's address, and per member a namespace whose
    /// veth pair joins the bridge. False (all undone) if any step fails.
    private static func makeNetwork(tag: String, subnet: String) -> Bool {
        removeNetwork(tag: tag)
        var steps: [[String]] = [
            ["link", "add", bridge(tag), "type", "bridge"],
            ["addr", "add", "\(subnet).1/24", "dev", bridge(tag)],
            ["link", "set", bridge(tag), "up"],
        ]
        for i in 0..<3 {
            let ns = namespace(tag, i), host = hostLink(tag, i), inner = "swn\(tag)x\(i)"
            steps += [
                ["netns", "add", ns],
                ["link", "add", host, "type", "veth", "peer", "name", inner],
                ["link", "set", inner, "netns", ns],
                ["link", "set", host, "master", bridge(tag)],
                ["link", "set", host, "up"],
                ["netns", "exec", ns, "ip", "addr", "add", "\(subnet).\(i + 2)/24", "dev", inner],
                ["netns", "exec", ns, "ip", "link", "set", inner, "up"],
                ["netns", "exec", ns, "ip", "link", "set", "lo", "up"],
            ]
        }
        for step in steps {
            guard let r = try? runCommand(ip, step), r.status == 0 else {
                removeNetwork(tag: tag)
                return false
            }
        }
        return true
    }

    private static func removeNetwork(tag: String) {
        for i in 0..<3 {
            _ = try? runCommand(ip, ["link", "del", hostLink(tag, i)])
            _ = try? runCommand(ip, ["netns", "del", namespace(tag, i)])
        }
        _ = try? runCommand(ip, ["link", "del", bridge(tag)])
    }

    func endpoint(_ i: Int) -> String { "\(hosts[i]):\(clientPorts[i])" }
    func logPath(_ i: Int) -> String { dataDirs[i] + ".log" }

    func peerURL(_ i: Int) -> String { "http://\(hosts[i]):\(peerPorts[i])" }

    /// Starts member `i` on its data dir: of the first three with `new`,
    /// or with what `member add` printed and `existing` (a member added).
    func start(_ i: Int, cluster: String? = nil, state: String = "new") throws {
        let cluster = cluster ?? (0..<3).map { "f\($0)=\(peerURL($0))" }.joined(separator: ",")
        let flags = ["--name", "f\(i)", "--data-dir", dataDirs[i], "--initial-cluster-state", state,
                     "--listen-client-urls", "http://\(endpoint(i))",
                     "--listen-peer-urls", "http://\(hosts[i]):\(peerPorts[i])",
                     "--initial-advertise-peer-urls", "http://\(hosts[i]):\(peerPorts[i])",
                     "--initial-cluster", cluster, "--initial-cluster-token", "fault-test",
                     // Small, so snapshots are sent to members that fall behind.
                     "--snapshot-count", "300", "--experimental-snapshot-catchup-entries", "50"]
        let command = inNamespaces ? [Self.ip, "netns", "exec", Self.namespace(tag, i), ServerProcess.executable] : [ServerProcess.executable]
        let child = try ChildProcess(command[0], Array(command.dropFirst()) + flags, stderr: .appending(logPath(i)))
        processes[i] = child
        let deadline = Date().addingTimeInterval(20)
        let mark = "\"address\":\"\(endpoint(i))\""
        while Date() < deadline {
            let log = (try? String(contentsOfFile: logPath(i), encoding: .utf8)) ?? ""
            // The last start's line (a restart appends to the same log).
            if let last = log.components(separatedBy: "\"msg\":\"allocator\"").last,
               last.contains("serving client traffic") && last.contains(mark) {
                return
            }
            guard child.isRunning else { break }
            usleep(20_000)
        }
        throw E2EError("member \(i) did not start (\(child.termination.map { "\($0)" } ?? "still running")):\n"
                       + ((try? String(contentsOfFile: logPath(i), encoding: .utf8)) ?? "").suffix(3000))
    }

    func kill(_ i: Int) {
        guard let p = processes[i] else { return }
        p.signal(SIGKILL)
        _ = p.waitUntilExit()
        processes[i] = nil
    }

    func pause(_ i: Int) { processes[i]?.signal(SIGSTOP) }
    func resume(_ i: Int) { processes[i]?.signal(SIGCONT) }

    /// Takes the member's link down (namespaces only).
    func cut(_ i: Int) { _ = try? runCommand(Self.ip, ["link", "set", Self.hostLink(tag, i), "down"]) }
    func heal(_ i: Int) { _ = try? runCommand(Self.ip, ["link", "set", Self.hostLink(tag, i), "up"]) }

    func setMemberID(_ i: Int, _ id: UInt64) { memberIDs[i] = id }

    /// Removes member `i`'s data (it must not be running).
    func wipe(_ i: Int) { try? FileManager.default.removeItem(atPath: dataDirs[i]) }

    func stop() {
        for i in 0..<3 {
            processes[i]?.signal(SIGCONT)
            kill(i)
        }
        if inNamespaces { Self.removeNetwork(tag: tag) }
        for d in dataDirs {
            try? FileManager.default.removeItem(atPath: d)
            try? FileManager.default.removeItem(atPath: d + ".log")
        }
    }
}

/// The randomized cluster fault test: three members, a writer, a
/// linearizable reader and a serializable reader on each member, while in
/// every round one member (the leader half of the time) is killed with -9
/// and restarted, paused with SIGSTOP/SIGCONT, cut off from everyone (its
/// link taken down), or replaced: removed from the cluster, its data
/// wiped, added again as a learner at the same address, and promoted. After each round: no acknowledged write is lost,
/// the history is linearizable (`ClusterHistory`), revisions never go back
/// for any client, and every member reaches the same revision with the
/// same keys and HashKV. A failing round prints its seed: rerun it with
/// SWETCD_SEED=<seed> SWETCD_FAULT_ROUNDS=1. SWETCD_FAULT_ROUNDS sets the
/// number of rounds (20 by default; README's longer mode asks for more).
@Suite(.serialized) struct ClusterFaultTests {
    enum Fault: String, CaseIterable { case kill, pause, partition, replace }

    static let keys = (0..<5).map { "k\($0)" }

    @Test func linearizableUnderFaults() async throws {
        let rounds = ProcessInfo.processInfo.environment["SWETCD_FAULT_ROUNDS"].flatMap(Int.init) ?? 20
        let firstSeed = testSeed()
        let c = try FaultCluster()
        defer { c.stop() }
        print("cluster fault test: \(rounds) rounds from seed \(firstSeed), members \(c.inNamespaces ? "in network namespaces" : "on 127.0.0.1 (not root: partitions become pauses)")")
        let clients = try (0..<3).map { try EtcdClient(endpoints: [c.endpoint($0)], connections: 1, timeout: 2) }
        defer { for client in clients { client.close() } }
        for i in 0..<3 {
            let status = try await retrying { try await clients[i].status() }
            c.setMemberID(i, status.header.memberID)
        }
        var totals = (writes: 0, acknowledged: 0, reads: 0)
        for round in 0..<rounds {
            let seed = firstSeed &+ UInt64(round)
            var rng = SeededRandom(seed: seed)
            let base = try await settledRevision(c, clients, context: "before round \(round) (seed \(seed))")
            var baseState: [String: (value: String, modRevision: Int64)] = [:]
            for kv in try await clients[0].get(.prefix("k"), { var o = GetOptions(); o.revision = base; return o }()).kvs {
                baseState[kv.keyString] = (kv.valueString, kv.modRevision)
            }
            let history = SharedHistory()
            let started = monotonicSeconds()
            let duration = 3.0
            let fault = Fault.allCases.randomElement(using: &rng)!
            let leader = try? await leaderIndex(c, clients)
            let target = Bool.random(using: &rng) ? (leader ?? 0) : Int.random(in: 0..<3, using: &rng)
            let faultAt = Double.random(in: 0.2...0.8, using: &rng), hold = Double.random(in: 0.4...1.6, using: &rng)
            let clientSeeds = (0..<9).map { _ in UInt64.random(in: 0...UInt64.max, using: &rng) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for n in 0..<9 {
                    let member = n % 3, kind = n / 3, clientSeed = clientSeeds[n]
                    group.addTask {
                        await Self.runClient(n, kind: kind, client: clients[member], round: round, seed: clientSeed,
                                             until: started + duration, history: history)
                    }
                }
                try await Task.sleep(for: .seconds(faultAt))
                // Off the cooperative threads: faults run etcdctl and wait
                // for processes, and the clients must keep running.
                let applied = try await offThePool { try Self.apply(fault, to: target, c) }
                try await Task.sleep(for: .seconds(hold))
                try await offThePool { try Self.heal(applied, target, c) }
                try await group.waitForAll()
            }
            let context = "round \(round) (seed \(seed)): \(fault) member \(target)\(target == leader ? " (the leader)" : "")"
            let final = try await settledRevision(c, clients, context: "after \(context)")
            let watcher = clients[(target + 1) % 3]
            let committed = try await withThrowingTaskGroup(of: [ClusterHistory.Committed]?.self) { group in
                group.addTask { try await Self.committedHistory(watcher, after: base, through: final) }
                group.addTask {
                    try await Task.sleep(for: .seconds(20))
                    return nil
                }
                let first = try await group.next()!
                group.cancelAll()
                return first
            }
            guard let committed else {
                Issue.record("\(context): the history through revision \(final) did not arrive within 20 s")
                break
            }
            let h = history.value.withLock { $0 }
            let violations = h.violations(committed: committed, base: base, baseState: baseState)
            #expect(violations.isEmpty, "\(context): \(violations.count) violations, first: \(violations.prefix(8).joined(separator: "; "))")
            // Every member: the same keys and history hash at the same revision.
            var hashes: Set<String> = []
            var keySets: Set<[String]> = []
            for i in 0..<3 {
                let out = try Etcdctl(endpoint: c.endpoint(i)).run("endpoint", "hashkv", "--rev=\(final)", "-w", "json").stdout
                hashes.insert(out.firstMatch(of: /"hash":(\d+)/).map { String($0.1) } ?? "none: \(out)")
                var o = GetOptions()
                o.serializable = true
                keySets.insert(try await clients[i].get(.prefix("k"), o).kvs.map { "\($0.keyString)=\($0.valueString)@\($0.modRevision)" })
            }
            #expect(hashes.count == 1 && keySets.count == 1, "\(context): members differ at revision \(final): \(hashes) \(keySets)")
            print("\(context): revisions \(base)...\(final), \(h.writes.count) writes (\(h.writes.filter { $0.revision != nil }.count) acknowledged), \(h.reads.count) reads")
            totals.writes += h.writes.count
            totals.acknowledged += h.writes.filter { $0.revision != nil }.count
            totals.reads += h.reads.count
            if !violations.isEmpty || hashes.count != 1 { break }
        }
        print("cluster fault test: \(totals.writes) writes (\(totals.acknowledged) acknowledged), \(totals.reads) reads checked")
        #expect(totals.acknowledged > rounds * 20, "too few writes succeeded to say much: \(totals)")
    }

    enum Applied { case killed, paused, cut, replaced }

    static func apply(_ fault: Fault, to i: Int, _ c: FaultCluster) throws -> Applied {
        switch fault {
        case .kill:
            c.kill(i)
            return .killed
        case .partition where c.inNamespaces:
            c.cut(i)
            return .cut
        case .pause, .partition:
            c.pause(i)
            return .paused
        case .replace:
            let via = Etcdctl(endpoint: c.endpoint((i + 1) % 3))
            try retryingEtcdctl { try via.run("member", "remove", String(c.memberIDs[i], radix: 16)) }
            c.kill(i)
            c.wipe(i)
            let added = try retryingEtcdctl { try via.run("member", "add", "f\(i)", "--learner", "--peer-urls=\(c.peerURL(i))") }
            guard let cluster = added.stdout.firstMatch(of: /ETCD_INITIAL_CLUSTER="([^"]*)"/)?.1 else {
                throw E2EError("member add printed no ETCD_INITIAL_CLUSTER: \(added)")
            }
            try c.start(i, cluster: String(cluster), state: "existing")
            return .replaced
        }
    }

    static func heal(_ applied: Applied, _ i: Int, _ c: FaultCluster) throws {
        switch applied {
        case .killed: try c.start(i)
        case .paused: c.resume(i)
        case .cut: c.heal(i)
        case .replaced:
            // Promoted once it has caught up (the leader says when).
            let via = Etcdctl(endpoint: c.endpoint((i + 1) % 3))
            let list = try via.run("member", "list", "-w", "json").stdout
            let members = (try? JSONSerialization.jsonObject(with: Data(list.utf8)) as? [String: Any])?["members"] as? [[String: Any]]
            guard let id = members?.first(where: { ($0["peerURLs"] as? [String]) == [c.peerURL(i)] })
                    .flatMap({ ($0["ID"] as? NSNumber)?.uint64Value }) else {
                throw E2EError("the new member is not listed: \(list)")
            }
            try retryingEtcdctl(also: "can only promote a learner member which is in sync with leader") {
                try via.run("member", "promote", String(id, radix: 16))
            }
            c.setMemberID(i, id)
        }
    }

    /// Runs an etcdctl command again (for up to 20 s) while it fails for a
    /// passing reason: the cluster not ready for a change yet, no leader.
    @discardableResult
    static func retryingEtcdctl(also passing: String? = nil, _ body: () throws -> CommandResult) throws -> CommandResult {
        let deadline = Date().addingTimeInterval(20)
        while true {
            let r = try body()
            if r.status == 0 { return r }
            let transient = ["unhealthy cluster", "no leader", "request timed out", "context deadline exceeded", "leader changed"]
                + (passing.map { [$0] } ?? [])
            guard transient.contains(where: { r.stderr.contains($0) }), Date() < deadline else { throw E2EError("etcdctl failed: \(r)") }
            usleep(250_000)
        }
    }

    /// One client's calls, one after another, until `until`: kind 0 puts,
    /// 1 reads linearizably, 2 serializably; each recorded with its times.
    static func runClient(_ n: Int, kind: Int, client: EtcdClient, round: Int, seed: UInt64, until: Double,
                          history: SharedHistory) async {
        var rng = SeededRandom(seed: seed)
        var count = 0
        while monotonicSeconds() < until {
            let key = keys.randomElement(using: &rng)!
            let start = monotonicSeconds()
            var failed = false
            if kind == 0 {
                let value = "r\(round)c\(n)n\(count)"
                count += 1
                var revision: Int64?
                do {
                    revision = try await client.put(key, value).header.revision
                } catch {
                    failed = true
                }
                let end = monotonicSeconds()
                history.value.withLock { $0.writes.append(.init(client: n, key: key, value: value, start: start, end: end, revision: revision)) }
            } else {
                var o = GetOptions()
                o.serializable = kind == 2
                do {
                    let r = try await client.get(key, o)
                    let end = monotonicSeconds()
                    let kv = r.kvs.first
                    history.value.withLock {
                        $0.reads.append(.init(client: n, linearizable: kind == 1, key: key, start: start, end: end,
                                              revision: r.header.revision, value: kv?.valueString, modRevision: kv?.modRevision ?? 0))
                    }
                } catch {
                    failed = true
                }
            }
            // A member that is down answers at once: do not spin on it.
            if failed { try? await Task.sleep(for: .milliseconds(50)) }
        }
    }

    /// Waits until every member has a leader and all report one revision
    /// (twice in a row, 100 ms apart, as nothing writes meanwhile).
    func settledRevision(_ c: FaultCluster, _ clients: [EtcdClient], context: String) async throws -> Int64 {
        let deadline = monotonicSeconds() + 30
        var previous: Int64?
        var seen = ""
        // At least 60 looks, however long they take: while other tests'
        // blocking waits hold the process's few cooperative threads, this
        // task may not run for many seconds, and the deadline alone would
        // pass without a fair look.
        var looks = 0
        while monotonicSeconds() < deadline || looks < 60 {
            looks += 1
            var revisions: [Int64] = []
            for client in clients {
                guard let s = try? await client.status(), s.leader != 0 else { break }
                revisions.append(s.header.revision)
            }
            seen = "\(revisions)"
            if revisions.count == 3, Set(revisions).count == 1 {
                if previous == revisions[0] { return revisions[0] }
                previous = revisions[0]
            } else {
                previous = nil
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw E2EError("the members did not settle on one revision \(context) (last seen \(seen)); logs: \(c.logPath(0)) ...")
    }

    func leaderIndex(_ c: FaultCluster, _ clients: [EtcdClient]) async throws -> Int? {
        let leader = try await clients[0].status().leader
        return c.memberIDs.firstIndex(of: leader)
    }

    /// Every write after `base` through `final`, from a watch.
    static func committedHistory(_ client: EtcdClient, after base: Int64, through final: Int64) async throws -> [ClusterHistory.Committed] {
        guard final > base else { return [] }
        var options = WatchOptions()
        options.startRevision = base + 1
        var out: [ClusterHistory.Committed] = []
        for try await response in client.watch(.prefix("k"), options) {
            for e in response.events {
                out.append(.init(revision: e.kv.modRevision, key: e.kv.keyString, value: e.kv.valueString))
            }
            if (out.last?.revision ?? 0) >= final || response.canceled { break }
        }
        return out
    }

    func retrying<T>(_ body: () async throws -> T) async throws -> T {
        for _ in 0..<100 {
            if let v = try? await body() { return v }
            try await Task.sleep(for: .milliseconds(100))
        }
        return try await body()
    }
}

/// What the clients of one round record, shared between their tasks.
final class SharedHistory: Sendable {
    let value = Locked(ClusterHistory())
}

func monotonicSeconds() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) / 1e9
}

/// A value handed between threads by the test harness, which knows only
/// one of them uses it at a time.
struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
