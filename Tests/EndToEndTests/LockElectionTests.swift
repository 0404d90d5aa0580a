import EtcdClient
import EtcdProto
import Foundation
import Testing
import TestSupport

/// The server-side Lock and Election services (v3lockpb, v3electionpb)
/// over gRPC, with the Swift client and messages generated from our own
/// .proto files.
@Suite struct LockElectionTests {
    /// The services' calls, as a client without etcd's concurrency package
    /// makes them.
    struct Coordinator: Sendable {
        let client: EtcdClient

        func lock(_ name: String, lease: Int64, timeout: Double = 60) async throws -> V3lockpb_LockResponse {
            try await client.unary("/v3lockpb.Lock/Lock", V3lockpb_LockRequest.with {
                $0.name = Data(name.utf8)
                $0.lease = lease
            }, timeout: timeout)
        }

        func unlock(_ key: Data) async throws {
            let _: V3lockpb_UnlockResponse = try await client.unary("/v3lockpb.Lock/Unlock", V3lockpb_UnlockRequest.with { $0.key = key })
        }

        func campaign(_ name: String, lease: Int64, value: String, timeout: Double = 60) async throws -> V3electionpb_LeaderKey {
            let r: V3electionpb_CampaignResponse = try await client.unary("/v3electionpb.Election/Campaign", V3electionpb_CampaignRequest.with {
                $0.name = Data(name.utf8)
                $0.lease = lease
                $0.value = Data(value.utf8)
            }, timeout: timeout)
            return r.leader
        }

        func proclaim(_ leader: V3electionpb_LeaderKey, _ value: String) async throws {
            let _: V3electionpb_ProclaimResponse = try await client.unary("/v3electionpb.Election/Proclaim", V3electionpb_ProclaimRequest.with {
                $0.leader = leader
                $0.value = Data(value.utf8)
            })
        }

        func resign(_ leader: V3electionpb_LeaderKey) async throws {
            let _: V3electionpb_ResignResponse = try await client.unary("/v3electionpb.Election/Resign",
                                                                         V3electionpb_ResignRequest.with { $0.leader = leader })
        }

        func leader(_ name: String) async throws -> Mvccpb_KeyValue {
            let r: V3electionpb_LeaderResponse = try await client.unary("/v3electionpb.Election/Leader",
                                                                         V3electionpb_LeaderRequest.with { $0.name = Data(name.utf8) })
            return r.kv
        }

        /// Observes an election: each leader response's key and value, as
        /// `key=value`, in the order they came.
        func observe(_ name: String) throws -> Observation {
            let seen = Observation()
            let request: [UInt8] = try V3electionpb_LeaderRequest.with { $0.name = Data(name.utf8) }.serializedBytes()
            let client = self.client
            client.onLoop {
                client.startServerStream("/v3electionpb.Election/Observe", request, onMessage: { bytes in
                    guard let r = try? V3electionpb_LeaderResponse(serializedBytes: bytes) else { return }
                    seen.values.withLock { $0.append("\(String(decoding: r.kv.key, as: UTF8.self))=\(String(decoding: r.kv.value, as: UTF8.self))") }
                }, done: { error in seen.ended.withLock { $0 = error.map { "\($0)" } ?? "ended" } })
            }
            return seen
        }
    }

    final class Observation: Sendable {
        let values = Locked<[String]>([])
        let ended = Locked<String?>(nil)
    }

    /// Waits up to `seconds` for `condition`.
    static func eventually(_ seconds: Double = 30, _ condition: () async throws -> Bool) async throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try await condition() { return true }
            try await Task.sleep(nanoseconds: 20_000_000)
        }
        return try await condition()
    }

    func withServer(_ body: (EtcdClient, ServerProcess) async throws -> Void) async throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let client = try EtcdClient(endpoints: [server.endpoint])
        defer { client.close() }
        try await body(client, server)
    }

    /// 20 clients, each on its own connection and lease, increment a shared
    /// counter three times, each time inside the lock, with a read and a
    /// write apart: the counter ends exact, no two hold the lock at once,
    /// and the lock goes to its waiters in the order their keys were made.
    @Test func twentyContendersExcludeEachOtherInCreateOrder() async throws {
        try await withServer { admin, server in
            try await admin.put("counter", "0")
            /// Per acquisition: the counter value it read, its key's create
            /// revision, and the revision of its lock response.
            let acquisitions = Locked<[(count: Int, created: Int64)]>([])
            let inside = Locked(0), overlaps = Locked(0)
            let endpoint = server.endpoint
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<20 {
                    group.addTask {
                        let client = try EtcdClient(endpoints: [endpoint])
                        defer { client.close() }
                        let c = Coordinator(client: client)
                        let lease = try await client.grantLease(ttl: 3600).id
                        for _ in 0..<3 {
                            let held = try await c.lock("counter-lock", lease: lease)
                            if inside.withLock({ $0 += 1; return $0 }) > 1 { overlaps.withLock { $0 += 1 } }
                            let count = Int(try await client.get("counter").kvs[0].valueString)!
                            let created = try await client.get(.key([UInt8](held.key))).kvs[0].createRevision
                            try await Task.sleep(nanoseconds: UInt64.random(in: 0...3_000_000))
                            try await client.put("counter", "\(count + 1)")
                            acquisitions.withLock { $0.append((count, created)) }
                            inside.withLock { $0 -= 1 }
                            try await c.unlock(held.key)
                        }
                        try await client.revokeLease(lease)
                    }
                }
                try await group.waitForAll()
            }
            #expect(try await admin.get("counter").kvs[0].valueString == "60")
            #expect(overlaps.withLock { $0 } == 0)
            let byCount = acquisitions.withLock { $0 }.sorted { $0.count < $1.count }
            #expect(byCount.map(\.count) == Array(0..<60))
            let created = byCount.map(\.created)
            #expect(created == created.sorted(), "the lock went out of create-revision order: \(created)")
            #expect(try await admin.get(.prefix("counter-lock/")).kvs.isEmpty)
        }
    }

    /// A waiter whose own lease expires is told its session expired; a
    /// waiter past its deadline gives up its place; a holder whose lease
    /// expires hands the lock to the next waiter; a lease locks again at
    /// once; a lock without a lease gets one.
    @Test func leasesAndDeadlinesEndHoldsAndWaits() async throws {
        try await withServer { client, _ in
            let c = Coordinator(client: client)
            func key(_ lease: Int64) -> String { "l/\(String(lease, radix: 16))" }
            let holder = try await client.grantLease(ttl: 3600).id
            let held = try await c.lock("l", lease: holder)
            #expect(held.key == Data(key(holder).utf8))
            // A waiter whose lease goes while it waits.
            let doomed = try await client.grantLease(ttl: 3600).id
            let waiting = Task { try await c.lock("l", lease: doomed) }
            #expect(try await Self.eventually { try await !client.get(key(doomed)).kvs.isEmpty })
            try await client.revokeLease(doomed)
            await #expect(throws: EtcdError.other(code: .unknown, message: "mutex: session is expired")) { _ = try await waiting.value }
            let impatient = try await client.grantLease(ttl: 3600).id
            await #expect(throws: EtcdError.deadlineExceeded) { _ = try await c.lock("l", lease: impatient, timeout: 0.3) }
            #expect(try await Self.eventually { try await client.get(key(impatient)).kvs.isEmpty })
            #expect(try await client.get(.prefix("l/")).kvs.map(\.keyString) == [key(holder)])
            try await c.unlock(held.key)

            // A holder whose lease expires (2 s; granted again if the
            // machine was too busy to lock before it expired).
            var short: Int64 = 0
            for _ in 0..<10 {
                short = try await client.grantLease(ttl: 2).id
                do {
                    _ = try await c.lock("l", lease: short)
                    break
                } catch EtcdError.leaseNotFound {
                    continue
                }
            }
            let next = try await client.grantLease(ttl: 3600).id
            let got = try await c.lock("l", lease: next)
            #expect(got.key == Data(key(next).utf8))
            // Nothing but the expiry lets go: at the revision the lock was
            // granted, the holder's key was gone, and so is its lease.
            var atGrant = GetOptions()
            atGrant.revision = got.header.revision
            #expect(try await client.get(key(short), atGrant).kvs.isEmpty)
            let expired: Etcdserverpb_LeaseTimeToLiveResponse = try await client.unary(
                "/etcdserverpb.Lease/LeaseTimeToLive", Etcdserverpb_LeaseTimeToLiveRequest.with { $0.id = short })
            #expect(expired.ttl == -1)
            #expect(try await client.get(.prefix("l/")).kvs.map(\.keyString) == [key(next)])
            #expect(try await c.lock("l", lease: next, timeout: 30).key == got.key)
            try await c.unlock(got.key)

            // No lease named: the key's is a new one of 60 s.
            let asked = Date()
            let own = try await c.lock("l", lease: 0)
            let lease = try #require(Int64(String(decoding: own.key.dropFirst(2), as: UTF8.self), radix: 16))
            #expect(own.key == Data(key(lease).utf8))
            let live: Etcdserverpb_LeaseTimeToLiveResponse = try await client.unary("/etcdserverpb.Lease/LeaseTimeToLive",
                                                                                   Etcdserverpb_LeaseTimeToLiveRequest.with { $0.id = lease })
            if Date().timeIntervalSince(asked) < 50 { #expect(live.grantedTtl == 60) }
            await #expect(throws: EtcdError.leaseNotFound) { _ = try await c.lock("m", lease: 12345) }
            // A proposal past --max-request-bytes (1.5 MiB) is refused as
            // etcd refuses it.
            await #expect(throws: EtcdError.requestTooLarge) {
                _ = try await c.campaign("big", lease: next, value: String(repeating: "x", count: 1_600_000))
            }
        }
    }

    /// A random sequence of campaigns, proclamations, resignations and
    /// lease revocations among four candidates, against a model: the
    /// leader is the live candidate whose key was made first. After each
    /// step Leader names the model's leader, whose Campaign has returned;
    /// a waiting candidate whose lease is revoked is told so, one past its
    /// deadline resigns; and Observe sees every leader and every value
    /// proclaimed, in order.
    @Test func electionsFollowTheModel() async throws {
        let seed = testSeed()
        var random = SeededRandom(seed: seed)
        try await withServer { client, _ in
            let c = Coordinator(client: client)
            var leases: [Int64] = []
            for _ in 0..<4 { leases.append(try await client.grantLease(ttl: 3600).id) }
            func keyOf(_ lease: Int64) -> String { "e/\(String(lease, radix: 16))" }
            /// The model: candidates in the order their keys were made.
            var queue: [(slot: Int, value: String)] = []
            var campaigns: [Int: Task<V3electionpb_LeaderKey, Error>] = [:]
            var expected: [String] = []
            var lastSeen: String?
            func noteLeader(proclaimed: Bool = false) {
                let now = queue.first.map { "\(keyOf(leases[$0.slot]))=\($0.value)" }
                if let now, now != lastSeen || proclaimed { expected.append(now) }
                lastSeen = now
            }
            /// Campaigns, and returns once the candidate's key is made (so
            /// that keys are made in the model's order).
            func campaign(_ slot: Int, _ value: String) async throws {
                let lease = leases[slot]
                queue.append((slot, value))
                campaigns[slot] = Task { try await c.campaign("e", lease: lease, value: value) }
                #expect(try await Self.eventually { try await !client.get(keyOf(lease)).kvs.isEmpty })
            }
            // A first leader before observing starts, so that Observe is
            // known to be open once it reports that one.
            try await campaign(0, "first")
            noteLeader()
            _ = try await campaigns[0]!.value
            let observed = try c.observe("e")
            #expect(try await Self.eventually { observed.values.withLock { $0 } == expected })
            // A candidate past its deadline resigns.
            let impatient = try await client.grantLease(ttl: 3600).id
            await #expect(throws: EtcdError.deadlineExceeded) { _ = try await c.campaign("e", lease: impatient, value: "no", timeout: 0.3) }
            #expect(try await Self.eventually { try await client.get(keyOf(impatient)).kvs.isEmpty })
            for step in 0..<40 {
                let slot = Int(random.next() % 4)
                let value = "v\(step)"
                let at = queue.firstIndex { $0.slot == slot }
                let action = random.next() % 3
                if at == nil {
                    try await campaign(slot, value)
                    noteLeader()
                } else if at == 0 && action == 0 {
                    let key = try await campaigns[slot]!.value
                    try await c.proclaim(key, value)
                    queue[0].value = value
                    noteLeader(proclaimed: true)
                } else if at == 0 && action == 1 {
                    let key = try await campaigns[slot]!.value
                    try await c.resign(key)
                    queue.removeFirst()
                    campaigns[slot] = nil
                    noteLeader()
                    // A resigned leader can no longer proclaim.
                    await #expect(throws: EtcdError.other(code: .unknown, message: "election: not leader")) {
                        try await c.proclaim(key, "late")
                    }
                } else {
                    // The candidate's lease is revoked: its key goes; a
                    // Campaign still waiting is told its session expired.
                    try await client.revokeLease(leases[slot])
                    queue.remove(at: at!)
                    if at! > 0 {
                        await #expect(throws: EtcdError.other(code: .unknown, message: "election: session is expired")) {
                            _ = try await campaigns[slot]!.value
                        }
                    }
                    campaigns[slot] = nil
                    leases[slot] = try await client.grantLease(ttl: 3600).id
                    noteLeader()
                }
                if let first = queue.first {
                    let key = try await campaigns[first.slot]!.value
                    #expect(String(decoding: key.key, as: UTF8.self) == keyOf(leases[first.slot]), "seed \(seed) step \(step)")
                    let kv = try await c.leader("e")
                    #expect(kv.keyString == keyOf(leases[first.slot]) && kv.valueString == first.value, "seed \(seed) step \(step)")
                } else {
                    await #expect(throws: EtcdError.other(code: .unknown, message: "election: no leader")) { _ = try await c.leader("e") }
                }
            }
            #expect(try await Self.eventually { observed.values.withLock { $0 } == expected },
                    "seed \(seed): observed \(observed.values.withLock { $0 }), expected \(expected)")
            #expect(observed.ended.withLock { $0 } == nil)
            for t in campaigns.values { t.cancel() }
        }
    }

    /// `etcdctl lock` (clientv3's own recipe, on the client) and the
    /// server's Lock take the same keys, so they exclude each other both
    /// ways round.
    @Test func etcdctlLockAndServerLockExcludeEachOther() async throws {
        try await withServer { client, server in
            let c = Coordinator(client: client)
            let etcdctl = ProcessInfo.processInfo.environment["SWETCD_ETCDCTL"] ?? "/usr/bin/etcdctl"
            let output = FileManager.default.temporaryDirectory.appendingPathComponent("lock-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: output) }
            func etcdctlLock() throws -> ChildProcess {
                _ = FileManager.default.createFile(atPath: output, contents: nil)
                return try ChildProcess(etcdctl, ["--endpoints=\(server.endpoint)", "lock", "shared"],
                                        environment: ["ETCDCTL_API": "3"], stdout: .file(output))
            }
            func etcdctlHolds() -> Bool {
                ((try? String(contentsOfFile: output, encoding: .utf8)) ?? "").hasPrefix("shared/")
            }
            // etcdctl holds: the server's Lock waits until etcdctl lets go.
            let first = try etcdctlLock()
            #expect(try await Self.eventually { etcdctlHolds() })
            let lease = try await client.grantLease(ttl: 3600).id
            await #expect(throws: EtcdError.deadlineExceeded) { _ = try await c.lock("shared", lease: lease, timeout: 1) }
            first.signal(SIGINT)
            _ = try await offThePool { first.waitUntilExit() }
            let held = try await c.lock("shared", lease: lease, timeout: 30)
            // The server's Lock holds: etcdctl waits until it is unlocked.
            let second = try etcdctlLock()
            defer { _ = second.terminate() }
            try await Task.sleep(nanoseconds: 1_000_000_000)
            #expect(!etcdctlHolds() && second.isRunning)
            try await c.unlock(held.key)
            #expect(try await Self.eventually { etcdctlHolds() })
        }
    }

    /// In a cluster of three: a waiter on a follower gets the lock when
    /// the holder's key is deleted through the leader, also after the
    /// leadership moved; a candidate waiting on a follower leads once the
    /// leader resigns through another member, and Observe on the third
    /// member sees both leaders.
    @Test func waitersOnFollowersAcrossALeaderChange() async throws {
        let cluster = try ClusterTests.Cluster()
        defer { cluster.stop() }
        let leader = try await offThePool { try cluster.leader() }
        let (f1, f2) = ((leader + 1) % 3, (leader + 2) % 3)
        let clients = try cluster.members.map { try EtcdClient(endpoints: [$0!.endpoint]) }
        defer { for c in clients { c.close() } }
        let onLeader = Coordinator(client: clients[leader]), onF1 = Coordinator(client: clients[f1])
        let onF2 = Coordinator(client: clients[f2])

        let holderLease = try await clients[leader].grantLease(ttl: 3600).id
        let held = try await onLeader.lock("cl", lease: holderLease)
        let waiterLease = try await clients[f1].grantLease(ttl: 3600).id
        let waiter = Task { try await onF1.lock("cl", lease: waiterLease) }

        let a = try await clients[leader].grantLease(ttl: 3600).id, b = try await clients[f1].grantLease(ttl: 3600).id
        let aKey = try await onLeader.campaign("ce", lease: a, value: "a")
        let candidate = Task { try await onF1.campaign("ce", lease: b, value: "b") }
        let observed = try onF2.observe("ce")
        #expect(try await Self.eventually { observed.values.withLock { $0 } == ["ce/\(String(a, radix: 16))=a"] })

        // The leadership moves to f2.
        let f2ID = try await offThePool { () throws -> String in
            let json = try cluster.etcdctl(f2).run("endpoint", "status", "-w", "json").stdout
            return String(try #require(json.firstMatch(of: /"member_id":(\d+)/).flatMap { UInt64($0.1) }), radix: 16)
        }
        let moved = try await offThePool { try cluster.etcdctl(leader).run("move-leader", f2ID) }
        #expect(moved.status == 0, "\(moved)")
        #expect(try await offThePool { try cluster.leader() } == f2)

        try await onF2.unlock(held.key)
        let got = try await waiter.value
        #expect(got.key == Data("cl/\(String(waiterLease, radix: 16))".utf8))
        try await onF2.resign(aKey)
        let bKey = try await candidate.value
        #expect(bKey.key == Data("ce/\(String(b, radix: 16))".utf8))
        #expect(try await onLeader.leader("ce").valueString == "b")
        #expect(try await Self.eventually {
            observed.values.withLock { $0 } == ["ce/\(String(a, radix: 16))=a", "ce/\(String(b, radix: 16))=b"]
        }, "\(observed.values.withLock { $0 })")
    }

    /// An Observe call whose client stops reading is ended once 1 MiB
    /// waits for it (RESOURCE_EXHAUSTED), so the server keeps no more for
    /// it (without the bound it was sent all 24 values of 256 KiB, kept
    /// for it until it read, and the stream went on).
    @Test func anObserverThatDoesNotReadIsEnded() throws {
        let server = try ServerProcess()
        defer { server.stop() }
        let r = try runPython("observe_unread.py", [server.endpoint])
        let counted = r.stdout.firstMatch(of: /grpc-status 8 after (\d+) of 24 messages/).flatMap { Int($0.1) }
        #expect(r.status == 0 && counted != nil && counted! < 12, "\(r.stdout)\(r.stderr)")
    }

    /// With auth on, the services act with their caller's permissions: a
    /// user who may read and write under a name locks and campaigns there,
    /// and is refused elsewhere with etcd's error; no user, no lock.
    @Test func callersNeedPermissionOnTheName() async throws {
        try await withServer { _, server in
            let e = Etcdctl(endpoint: server.endpoint)
            for command in [["user", "add", "root:pw"], ["user", "add", "alice:pw"], ["role", "add", "locker"],
                            ["role", "grant-permission", "locker", "readwrite", "--prefix=true", "mine/"],
                            ["user", "grant-role", "alice", "locker"], ["auth", "enable"]] {
                let r = try e.run(arguments: command)
                #expect(r.status == 0, "\(command): \(r)")
            }
            let alice = try EtcdClient(endpoints: [server.endpoint], user: "alice", password: "pw")
            defer { alice.close() }
            let c = Coordinator(client: alice)
            let lease = try await alice.grantLease(ttl: 3600).id
            #expect(try await c.lock("mine", lease: lease).key == Data("mine/\(String(lease, radix: 16))".utf8))
            _ = try await c.campaign("mine", lease: lease, value: "x")
            #expect(try await c.leader("mine").valueString == "x")
            let denied = EtcdError.permissionDenied
            await #expect(throws: denied) { _ = try await c.lock("theirs", lease: lease) }
            await #expect(throws: denied) { _ = try await c.campaign("theirs", lease: lease, value: "x") }
            await #expect(throws: denied) { _ = try await c.leader("theirs") }
            let anonymous = try EtcdClient(endpoints: [server.endpoint])
            defer { anonymous.close() }
            await #expect(throws: EtcdError.self) { _ = try await Coordinator(client: anonymous).lock("mine", lease: lease) }
        }
    }
}

extension Mvccpb_KeyValue {
    var keyString: String { String(decoding: key, as: UTF8.self) }
    var valueString: String { String(decoding: value, as: UTF8.self) }
}
