import EtcdProto
import Foundation

/// etcd's concurrency recipes (clientv3/concurrency) over plain KV, lease
/// and watch calls, so they work against any etcd: a session is a lease
/// kept alive; a mutex and an election are keys under a prefix, ordered by
/// their create revision, each waiting for the deletion of the one before.
public final class LeaseSession: Sendable {
    public let client: EtcdClient
    public let lease: Int64
    public let ttl: Int64
    private let keepAlive: Task<Void, Never>

    /// Grants a lease of `ttl` seconds and renews it every third of that
    /// until `close`; `expired` runs if the server no longer has it.
    public init(_ client: EtcdClient, ttl: Int64 = 60, expired: (@Sendable () -> Void)? = nil) async throws {
        self.client = client
        self.ttl = ttl
        let (id, granted) = try await client.grantLease(ttl: ttl)
        lease = id
        keepAlive = Task {
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: UInt64(max(Double(granted) / 3, 0.5) * 1e9))
                if Task.isCancelled { return }
                if let left = try? await client.keepAliveOnce(id), left <= 0 {
                    expired?()
                    return
                }
            }
        }
    }

    /// Stops renewing and revokes the lease (its keys go with it).
    public func close() async {
        keepAlive.cancel()
        try? await client.revokeLease(lease)
    }
}

/// Waits until every key under `prefix` created at or below
/// `maxCreateRevision` is deleted (clientv3's waitDeletes).
func waitDeletes(_ client: EtcdClient, prefix: [UInt8], maxCreateRevision: Int64) async throws -> Etcdserverpb_ResponseHeader {
    while true {
        var r = Etcdserverpb_RangeRequest()
        (r.key, r.rangeEnd) = KeyRange.prefix(prefix).wire
        r.sortTarget = .create
        r.sortOrder = .descend
        r.limit = 1
        r.maxCreateRevision = maxCreateRevision
        let last: Etcdserverpb_RangeResponse = try await client.unary("/etcdserverpb.KV/Range", r)
        guard let kv = last.kvs.first else { return last.header }
        try await waitDelete(client, key: [UInt8](kv.key), from: last.header.revision)
    }
}

func waitDelete(_ client: EtcdClient, key: [UInt8], from revision: Int64) async throws {
    var options = WatchOptions()
    options.startRevision = revision
    for try await r in client.watch(.key(key), options) {
        if r.canceled { throw EtcdError.other(code: .canceled, message: r.cancelReason.isEmpty ? "watch canceled" : r.cancelReason) }
        if r.events.contains(where: { $0.kind == .delete }) { return }
    }
    throw EtcdError.unavailable("lost watcher waiting for delete")
}

/// The first key created under a prefix: its owner or leader.
func firstCreated(_ client: EtcdClient, prefix: [UInt8]) -> Etcdserverpb_RequestOp {
    var r = Etcdserverpb_RangeRequest()
    (r.key, r.rangeEnd) = KeyRange.prefix(prefix).wire
    r.sortTarget = .create
    r.sortOrder = .ascend
    r.limit = 1
    var op = Etcdserverpb_RequestOp()
    op.request = .requestRange(r)
    return op
}

/// A transaction that puts `key` (with `value`, on `lease`) unless it
/// exists, and otherwise reads it; `alsoRead` is appended to both branches.
func createUnlessPresent(_ key: String, value: String, lease: Int64, alsoRead: Etcdserverpb_RequestOp? = nil) -> Etcdserverpb_TxnRequest {
    var t = Etcdserverpb_TxnRequest()
    var c = Etcdserverpb_Compare()
    c.key = Data(key.utf8)
    c.target = .create
    c.result = .equal
    c.targetUnion = .createRevision(0)
    t.compare = [c]
    var put = Etcdserverpb_PutRequest()
    (put.key, put.value, put.lease) = (Data(key.utf8), Data(value.utf8), lease)
    var putOp = Etcdserverpb_RequestOp()
    putOp.request = .requestPut(put)
    var get = Etcdserverpb_RangeRequest()
    get.key = Data(key.utf8)
    var getOp = Etcdserverpb_RequestOp()
    getOp.request = .requestRange(get)
    t.success = [putOp] + (alsoRead.map { [$0] } ?? [])
    t.failure = [getOp] + (alsoRead.map { [$0] } ?? [])
    return t
}

/// A distributed lock (clientv3's concurrency.Mutex): the key
/// `name/<lease in hex>`; held once every older key under `name/` is gone.
public final class DistributedMutex: Sendable {
    public let session: LeaseSession
    public let prefix: String
    public let key: String

    public init(_ session: LeaseSession, name: String) {
        self.session = session
        prefix = name + "/"
        key = prefix + String(UInt64(bitPattern: session.lease), radix: 16)
    }

    /// Takes the lock, waiting for earlier holders; returns the header of
    /// the moment it was taken and the key's create revision.
    @discardableResult
    public func lock() async throws -> (header: Etcdserverpb_ResponseHeader, revision: Int64) {
        let client = session.client
        let owner = firstCreated(client, prefix: Array(prefix.utf8))
        let t = createUnlessPresent(key, value: "", lease: session.lease, alsoRead: owner)
        let r: Etcdserverpb_TxnResponse = try await client.unary("/etcdserverpb.KV/Txn", t)
        var myRevision = r.header.revision
        if !r.succeeded, case .responseRange(let mine)? = r.responses.first?.response, let kv = mine.kvs.first {
            myRevision = kv.createRevision
        }
        if case .responseRange(let o)? = r.responses.last?.response, let first = o.kvs.first, first.createRevision != myRevision {
            do {
                let header = try await waitDeletes(client, prefix: Array(prefix.utf8), maxCreateRevision: myRevision - 1)
                return (header, myRevision)
            } catch {
                try? await unlock()
                throw error
            }
        }
        return (r.header, myRevision)
    }

    public func unlock() async throws {
        try await session.client.delete(.key(Array(key.utf8)))
    }
}

/// Leader election (clientv3's concurrency.Election): campaigning puts
/// `name/<lease in hex>` with the proposal; the oldest key leads.
public final class Election: Sendable {
    public let session: LeaseSession?
    public let prefix: String
    public let client: EtcdClient

    public init(_ session: LeaseSession, name: String) {
        self.session = session
        client = session.client
        prefix = name + "/"
    }

    /// For observing only.
    public init(_ client: EtcdClient, name: String) {
        session = nil
        self.client = client
        prefix = name + "/"
    }

    public var key: String? { session.map { prefix + String(UInt64(bitPattern: $0.lease), radix: 16) } }

    /// Waits until this session leads, with `proposal` as its value.
    public func campaign(_ proposal: String) async throws {
        guard let session, let key else { return }
        let t = createUnlessPresent(key, value: proposal, lease: session.lease)
        let r: Etcdserverpb_TxnResponse = try await client.unary("/etcdserverpb.KV/Txn", t)
        var revision = r.header.revision
        if !r.succeeded, case .responseRange(let mine)? = r.responses.first?.response, let kv = mine.kvs.first {
            revision = kv.createRevision
            if kv.value != Data(proposal.utf8) {
                try await client.put(Array(key.utf8), Array(proposal.utf8), { var o = PutOptions(); o.ignoreLease = true; return o }())
            }
        }
        do {
            _ = try await waitDeletes(client, prefix: Array(prefix.utf8), maxCreateRevision: revision - 1)
        } catch {
            try? await resign()
            throw error
        }
    }

    public func resign() async throws {
        guard let key else { return }
        try await client.delete(.key(Array(key.utf8)))
    }

    /// Each leader in turn, as clientv3's Observe: the leader's key and
    /// value, again when its value changes, and the next one once it goes.
    public func observe() -> AsyncThrowingStream<Etcdserverpb_RangeResponse, Error> {
        let client = self.client, prefix = Array(self.prefix.utf8)
        return AsyncThrowingStream { continuation in
            let task = Task {
                do {
                    while !Task.isCancelled {
                        var r = Etcdserverpb_RangeRequest()
                        if case .requestRange(let first)? = firstCreated(client, prefix: prefix).request { r = first }
                        var current: Etcdserverpb_RangeResponse = try await client.unary("/etcdserverpb.KV/Range", r)
                        if current.kvs.isEmpty {
                            // Wait for the first put under the prefix.
                            var options = WatchOptions()
                            options.startRevision = current.header.revision
                            watching: for try await w in client.watch(.prefix(prefix), options) {
                                for e in w.events where e.kind == .put {
                                    current.kvs = [Self.wire(e.kv)]
                                    current.header.revision = e.kv.modRevision
                                    break watching
                                }
                            }
                            if current.kvs.isEmpty { return continuation.finish() }
                        }
                        continuation.yield(current)
                        let leader = current.kvs[0]
                        var options = WatchOptions()
                        options.startRevision = current.header.revision + 1
                        changes: for try await w in client.watch(.key([UInt8](leader.key)), options) {
                            for e in w.events {
                                if e.kind == .delete { break changes }
                                var changed = current
                                changed.header.revision = w.header.revision
                                changed.kvs = [Self.wire(e.kv)]
                                continuation.yield(changed)
                            }
                        }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }

    static func wire(_ kv: KeyValue) -> Mvccpb_KeyValue {
        var w = Mvccpb_KeyValue()
        (w.key, w.value) = (Data(kv.key), Data(kv.value))
        (w.createRevision, w.modRevision, w.version, w.lease) = (kv.createRevision, kv.modRevision, kv.version, kv.lease)
        return w
    }
}
