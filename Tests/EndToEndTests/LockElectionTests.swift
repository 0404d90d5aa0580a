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
    static func eventually(_ seconds: Double = 10, _ condition: () async throws -> Bool) async throws -> Bool {
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
                        let lease = try await client.grantLease(ttl: 60).id
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
            let holder = try await client.grantLease(ttl: 60).id
            let held = try await c.lock("l", lease: holder)
            #expect(held.key == Data(key(holder).utf8))
            let expiring = try await client.grantLease(ttl: 1).id
            await #expect(throws: EtcdError.other(code: .unknown, message: "mutex: session is expired")) {
                _ = try await c.lock("l", lease: expiring)
            }
            let impatient = try await client.grantLease(ttl: 60).id
            await #expect(throws: EtcdError.deadlineExceeded) { _ = try await c.lock("l", lease: impatient, timeout: 0.3) }
            #expect(try await Self.eventually { try await client.get(key(impatient)).kvs.isEmpty })
            #expect(try await client.get(.prefix("l/")).kvs.map(\.keyString) == [key(holder)])
            try await c.unlock(held.key)

            let short = try await client.grantLease(ttl: 2).id
            _ = try await c.lock("l", lease: short)
            let next = try await client.grantLease(ttl: 60).id
            let started = Date()
            let got = try await c.lock("l", lease: next)
            let waited = Date().timeIntervalSince(started)
            #expect(got.key == Data(key(next).utf8))
            #expect(waited > 1 && waited < 6, "waited \(waited) s for a 2 s lease")
            #expect(try await client.get(.prefix("l/")).kvs.map(\.keyString) == [key(next)])
            #expect(try await c.lock("l", lease: next, timeout: 2).key == got.key)
            try await c.unlock(got.key)

            let own = try await c.lock("l", lease: 0)
            let lease = try #require(try await client.get(.key([UInt8](own.key))).kvs.first?.lease)
            #expect(lease != 0 && own.key == Data(key(lease).utf8))
            let live: Etcdserverpb_LeaseTimeToLiveResponse = try await client.unary("/etcdserverpb.Lease/LeaseTimeToLive",
                                                                                   Etcdserverpb_LeaseTimeToLiveRequest.with { $0.id = lease })
            #expect(live.grantedTtl == 60)
            await #expect(throws: EtcdError.self) { _ = try await c.lock("m", lease: 12345) }
        }
    }

    /// A random sequence of campaigns, proclamations, resignations and
    /// lease revocations among four candidates, against a model: the
    /// leader is the live candidate whose key was made first. After each
    /// step Leader names the model's leader, whose Campaign has returned;
    /// a waiting candidate whose lease is revoked is told so; and Observe
    /// sees every leader and every value proclaimed, in order.
    @Test func electionsFollowTheModel() async throws {
        let seed = testSeed()
        var random = SeededRandom(seed: seed)
        try await withServer { client, _ in
            let c = Coordinator(client: client)
            var leases: [Int64] = []
            for _ in 0..<4 { leases.append(try await client.grantLease(ttl: 60).id) }
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
            func campaign(_ slot: Int, _ value: String) {
                let lease = leases[slot]
                queue.append((slot, value))
                campaigns[slot] = Task { try await c.campaign("e", lease: lease, value: value) }
            }
            // A first leader before observing starts, so that Observe is
            // known to be open once it reports that one.
            campaign(0, "first")
            noteLeader()
            _ = try await campaigns[0]!.value
            let observed = try c.observe("e")
            #expect(try await Self.eventually { observed.values.withLock { $0 } == expected })
            for step in 0..<40 {
                let slot = Int(random.next() % 4)
                let value = "v\(step)"
                let at = queue.firstIndex { $0.slot == slot }
                let action = random.next() % 3
                if at == nil {
                    campaign(slot, value)
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
                    leases[slot] = try await client.grantLease(ttl: 60).id
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
}

extension Mvccpb_KeyValue {
    var keyString: String { String(decoding: key, as: UTF8.self) }
    var valueString: String { String(decoding: value, as: UTF8.self) }
}
