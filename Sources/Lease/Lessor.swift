import EtcdStatus

/// The lessor's state, with no clock and no I/O of its own: callers pass
/// the time (monotonic nanoseconds) and carry out what it returns (deleting
/// a revoked lease's keys through the write path, persisting leases). One
/// member's view; only the leader expires leases (DESIGN.md).
public struct Lessor {
    /// etcd's largest TTL (lease.MaxLeaseTTL).
    public static let maxTTL: Int64 = 9_000_000_000

    /// A granted TTL below this is raised to it (etcd: 1.5 election
    /// timeouts, rounded up to seconds; 2 with the default timings).
    public let minTTL: Int64

    public struct Lease: Equatable, Sendable {
        public let id: Int64
        /// Seconds asked for at grant (after raising to the minimum).
        public let ttl: Int64
        /// When it expires, CLOCK_MONOTONIC nanoseconds.
        public fileprivate(set) var expiry: UInt64
        public fileprivate(set) var keys: Set<[UInt8]> = []
        /// The expiry `takeExpired` last returned this lease for.
        fileprivate var reportedExpiry: UInt64?
    }

    private var leases: [Int64: Lease] = [:]
    private var leaseOfKey: [[UInt8]: Int64] = [:]
    /// Expiries in time order, with stale entries (renewed or revoked
    /// leases) skipped when they surface.
    private var expiries = MinHeap()

    public init(minTTL: Int64 = 2) {
        self.minTTL = minTTL
    }

    public var count: Int { leases.count }
    /// Leases granted and revoked (expired ones too) since start (etcd's
    /// `etcd_debugging_lease_granted_total` and `_revoked_total`).
    public private(set) var grantedTotal = 0
    public private(set) var revokedTotal = 0
    public var ids: [Int64] { leases.keys.sorted() }
    public func lease(_ id: Int64) -> Lease? { leases[id] }
    public func lease(attachedTo key: [UInt8]) -> Int64? { leaseOfKey[key] }

    /// Grants lease `id` (the caller picks a non-zero one) for `ttl`
    /// seconds, raised to `minTTL`.
    public mutating func grant(id: Int64, ttl: Int64, now: UInt64) throws(LeaseError) -> Lease {
        guard ttl <= Self.maxTTL else { throw .ttlTooLarge }
        guard leases[id] == nil else { throw .exists }
        let granted = max(ttl, minTTL)
        let lease = Lease(id: id, ttl: granted, expiry: Self.expiry(now, seconds: granted))
        leases[id] = lease
        expiries.push(lease.expiry, id)
        grantedTotal += 1
        return lease
    }

    /// Ends lease `id`; returns its keys, in key order, for the caller to
    /// delete in one revision.
    public mutating func revoke(_ id: Int64) throws(LeaseError) -> [[UInt8]] {
        guard let lease = leases.removeValue(forKey: id) else { throw .notFound }
        revokedTotal += 1
        for key in lease.keys { leaseOfKey[key] = nil }
        return lease.keys.sorted { $0.lexicographicallyPrecedes($1) }
    }

    /// Restarts lease `id`'s full TTL from `now` (a keep-alive); returns it.
    /// A lease past its expiry is not renewed (as etcd's: its revocation
    /// is due) and counts as not found.
    public mutating func renew(_ id: Int64, now: UInt64) throws(LeaseError) -> Int64 {
        guard var lease = leases[id], lease.expiry > now else { throw .notFound }
        lease.expiry = Self.expiry(now, seconds: lease.ttl)
        leases[id] = lease
        expiries.push(lease.expiry, id)
        grantedTotal += 1
        return lease.ttl
    }

    /// Whole seconds left on lease `id` at `now`, rounded down as etcd's
    /// TimeToLive does; nil if there is no such lease.
    public func remaining(_ id: Int64, now: UInt64) -> Int64? {
        guard let lease = leases[id] else { return nil }
        return lease.expiry <= now ? 0 : Int64((lease.expiry - now) / 1_000_000_000)
    }

    /// Sets lease `id`'s remaining time (a checkpoint restored at start):
    /// it expires `seconds` after `now`, not a whole TTL later.
    public mutating func setRemaining(_ id: Int64, seconds: Int64, now: UInt64) throws(LeaseError) {
        guard var lease = leases[id] else { throw .notFound }
        lease.expiry = Self.expiry(now, seconds: min(max(seconds, 0), lease.ttl))
        leases[id] = lease
        expiries.push(lease.expiry, id)
    }

    /// Attaches `key` to lease `id`, moving it off any lease it had.
    public mutating func attach(_ key: [UInt8], to id: Int64) throws(LeaseError) {
        guard leases[id] != nil else { throw .notFound }
        detach(key)
        leases[id]!.keys.insert(key)
        leaseOfKey[key] = id
    }

    /// Frees `key` from its lease (the key was deleted or put without one).
    public mutating func detach(_ key: [UInt8]) {
        guard let old = leaseOfKey.removeValue(forKey: key) else { return }
        leases[old]?.keys.remove(key)
    }

    /// Up to `limit` leases whose expiry is at or before `now`, soonest
    /// first. They stay granted until revoked; one returned here is not
    /// returned again unless it is renewed and expires anew. The limit
    /// bounds the revocations a tick proposes (etcd: 1,000 a second);
    /// the rest wait for the next call, never skipped.
    public mutating func takeExpired(now: UInt64, limit: Int) -> [Int64] {
        var out: [Int64] = []
        while out.count < limit, let (expiry, id) = expiries.min, expiry <= now {
            expiries.popMin()
            // Stale: revoked, or renewed to a later expiry since this entry.
            guard let lease = leases[id], lease.expiry == expiry, lease.reportedExpiry != expiry else { continue }
            leases[id]!.reportedExpiry = expiry
            out.append(id)
        }
        return out
    }

    private static func expiry(_ now: UInt64, seconds: Int64) -> UInt64 {
        let (sum, overflow) = now.addingReportingOverflow(UInt64(seconds) &* 1_000_000_000)
        return overflow ? .max : sum
    }
}

/// etcd's lease errors, with their gRPC codes and exact messages.
public enum LeaseError: Error, Equatable, EtcdStatusError {
    case notFound
    case exists
    case ttlTooLarge

    public var grpcCode: GRPCStatusCode {
        switch self {
        case .notFound: return .notFound
        case .exists: return .failedPrecondition
        case .ttlTooLarge: return .outOfRange
        }
    }

    public var grpcMessage: String {
        switch self {
        case .notFound: return EtcdMessage.leaseNotFound
        case .exists: return EtcdMessage.leaseExists
        case .ttlTooLarge: return EtcdMessage.leaseTTLTooLarge
        }
    }
}

/// A binary min-heap of (expiry, lease id).
struct MinHeap {
    private var items: [(UInt64, Int64)] = []

    var min: (UInt64, Int64)? { items.first }

    mutating func push(_ expiry: UInt64, _ id: Int64) {
        items.append((expiry, id))
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i].0 < items[parent].0 else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func popMin() {
        guard !items.isEmpty else { return }
        items.swapAt(0, items.count - 1)
        items.removeLast()
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var smallest = i
            if l < items.count && items[l].0 < items[smallest].0 { smallest = l }
            if r < items.count && items[r].0 < items[smallest].0 { smallest = r }
            guard smallest != i else { return }
            items.swapAt(i, smallest)
            i = smallest
        }
    }
}
