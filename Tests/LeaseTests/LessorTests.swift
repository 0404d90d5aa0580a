import EtcdStatus
import Testing
import TestSupport
@testable import Lease

/// The lessor against a naive model (dictionaries, a scan for expiry) under
/// random grants, renewals, revocations, attaches, detaches, checkpoints
/// and clock steps.
@Suite struct LessorModelTests {
    struct ModelLease { var ttl: Int64; var expiry: UInt64; var keys: Set<[UInt8]>; var reported: UInt64? }

    @Test func agreesWithANaiveModel() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        var lessor = Lessor(minTTL: 2)
        var model: [Int64: ModelLease] = [:]
        var now: UInt64 = 1_000_000_000
        let second: UInt64 = 1_000_000_000
        func key() -> [UInt8] { [UInt8(ascii: "k"), UInt8(rng.next() % 12)] }

        for step in 0..<20_000 {
            let id = Int64(rng.next() % 8) + 1
            switch rng.next() % 9 {
            case 0, 1:
                let ttl = Int64(rng.next() % 6)
                let got = Result { () throws(LeaseError) in try lessor.grant(id: id, ttl: ttl, now: now) }
                if model[id] != nil {
                    #expect(got.failure == .exists, "seed \(seed) step \(step)")
                } else {
                    let granted = max(ttl, 2)
                    model[id] = ModelLease(ttl: granted, expiry: now + UInt64(granted) * second, keys: [])
                    #expect(got.success?.ttl == granted, "seed \(seed) step \(step)")
                }
            case 2:
                let got = Result { () throws(LeaseError) in try lessor.revoke(id) }
                if let m = model.removeValue(forKey: id) {
                    #expect(got.success == m.keys.sorted { $0.lexicographicallyPrecedes($1) }, "seed \(seed) step \(step)")
                } else {
                    #expect(got.failure == .notFound, "seed \(seed) step \(step)")
                }
            case 3:
                let got = Result { () throws(LeaseError) in try lessor.renew(id, now: now) }
                if var m = model[id], m.expiry > now {
                    m.expiry = now + UInt64(m.ttl) * second
                    model[id] = m
                    #expect(got.success == m.ttl, "seed \(seed) step \(step)")
                } else {
                    #expect(got.failure == .notFound, "seed \(seed) step \(step)")
                }
            case 4:
                let k = key()
                let got = Result { () throws(LeaseError) in try lessor.attach(k, to: id) }
                if model[id] != nil {
                    for other in model.keys { model[other]!.keys.remove(k) }
                    model[id]!.keys.insert(k)
                    #expect(got.failure == nil, "seed \(seed) step \(step)")
                } else {
                    #expect(got.failure == .notFound, "seed \(seed) step \(step)")
                }
            case 5:
                let k = key()
                lessor.detach(k)
                for other in model.keys { model[other]!.keys.remove(k) }
            case 6:
                let seconds = Int64(rng.next() % 8)
                let got = Result { () throws(LeaseError) in try lessor.setRemaining(id, seconds: seconds, now: now) }
                if var m = model[id] {
                    m.expiry = now + UInt64(min(seconds, m.ttl)) * second
                    model[id] = m
                    #expect(got.failure == nil, "seed \(seed) step \(step)")
                } else {
                    #expect(got.failure == .notFound, "seed \(seed) step \(step)")
                }
            case 7:
                now += rng.next() % (3 * second)
            default:
                // Expired leases, soonest first (ties by id in the model;
                // the lessor's order among equal expiries is its own).
                let limit = Int(rng.next() % 4) + 1
                let got = lessor.takeExpired(now: now, limit: limit)
                let due = model.filter { $0.value.expiry <= now && $0.value.reported != $0.value.expiry }
                    .sorted { ($0.value.expiry, $0.key) < ($1.value.expiry, $1.key) }
                #expect(got.count == min(limit, due.count), "seed \(seed) step \(step)")
                #expect(got.map { model[$0]!.expiry } == due.prefix(got.count).map { $0.value.expiry },
                        "seed \(seed) step \(step)")
                for id in got {
                    #expect(model[id]!.expiry <= now && model[id]!.reported != model[id]!.expiry, "seed \(seed) step \(step)")
                    model[id]!.reported = model[id]!.expiry
                }
            }
            // The whole state, every step.
            #expect(lessor.ids == model.keys.sorted(), "seed \(seed) step \(step)")
            for (id, m) in model {
                #expect(lessor.lease(id)?.keys == m.keys, "seed \(seed) step \(step)")
                let left = m.expiry <= now ? 0 : Int64((m.expiry - now) / second)
                #expect(lessor.remaining(id, now: now) == left, "seed \(seed) step \(step)")
                for k in m.keys { #expect(lessor.lease(attachedTo: k) == id, "seed \(seed) step \(step)") }
            }
        }
    }

    @Test func grantRules() throws {
        var lessor = Lessor(minTTL: 2)
        #expect(try lessor.grant(id: 1, ttl: 1, now: 0).ttl == 2)  // raised to the minimum
        #expect(try lessor.grant(id: 2, ttl: 60, now: 0).ttl == 60)
        #expect(throws: LeaseError.ttlTooLarge) { try lessor.grant(id: 3, ttl: Lessor.maxTTL + 1, now: 0) }
        #expect(throws: LeaseError.exists) { try lessor.grant(id: 2, ttl: 5, now: 0) }
        #expect(LeaseError.notFound.grpcCode == .notFound)
        #expect(LeaseError.notFound.grpcMessage == "etcdserver: requested lease not found")
        #expect(LeaseError.exists.grpcCode == .failedPrecondition)
        #expect(LeaseError.exists.grpcMessage == "etcdserver: lease already exists")
        #expect(LeaseError.ttlTooLarge.grpcCode == .outOfRange)
        #expect(LeaseError.ttlTooLarge.grpcMessage == "etcdserver: too large lease TTL")
    }

    /// Expiry is bounded per call but never starves: every expired lease
    /// comes out within ceil(n / limit) calls.
    @Test func manyExpiriesDrainInBoundedBatches() throws {
        var lessor = Lessor(minTTL: 1)
        for id in 1...2_500 { _ = try lessor.grant(id: Int64(id), ttl: 1, now: 0) }
        var seen: Set<Int64> = []
        for _ in 0..<3 {
            let batch = lessor.takeExpired(now: 2_000_000_000, limit: 1_000)
            #expect(batch.count <= 1_000)
            seen.formUnion(batch)
        }
        #expect(seen.count == 2_500)
        #expect(lessor.takeExpired(now: 3_000_000_000, limit: 1_000).isEmpty)
    }
}

extension Result {
    var success: Success? { if case .success(let s) = self { return s } else { return nil } }
    var failure: Failure? { if case .failure(let f) = self { return f } else { return nil } }
}
