import Auth
import EtcdProto
import EtcdStatus
import Foundation
import MVCC
import SwiftProtobuf
import Transport

/// A call waiting in `keyWaits`: what it does with each applied change of
/// the keys it waits on (in apply order, once the batch they came in is
/// applied), and what it does when a leader's snapshot replaced the store.
final class KeyWaiter {
    var onChange: (WatchEvent) -> Void = { _ in }
    var recheck: () -> Void = {}
}

typealias TxnOutcome = Result<Etcdserverpb_TxnResponse, GRPCStatus>

/// A lock's or a candidate's place in its queue: its key (the name, `/`,
/// its lease in hex), made under that lease at `createRevision`. The
/// place made first is served first.
struct QueuePlace {
    let prefix: [UInt8]
    let key: [UInt8]
    let lease: Int64
    var createRevision: Int64

    init(name: Data, lease: Int64) {
        prefix = [UInt8](name) + [UInt8(ascii: "/")]
        // Go's %x of the lease ID, as clientv3's concurrency package names it.
        key = prefix + Array(String(lease, radix: 16).utf8)
        self.lease = lease
        createRevision = 0
    }
}

/// What the Lock and Election services share, as etcd's v3lock and
/// v3election run clientv3's concurrency package on the server: a session
/// lease, transactions made on the caller's behalf, and the wait for a
/// queue place's turn, which runs on the applied changes (no polling, no
/// watcher per waiter: each waits on the one key before its own).
extension EtcdServer {
    /// The TTL of the lease a call without one gets (clientv3's session
    /// default).
    static let sessionTTL: Int64 = 60

    // MARK: Waiting on keys

    func startWaiting(_ waiter: KeyWaiter) -> KeyWaits.ID {
        let id = keyWaits.newID()
        keyWaiters[id] = waiter
        return id
    }

    func stopWaiting(_ id: KeyWaits.ID) {
        keyWaits.remove(id)
        keyWaiters[id] = nil
    }

    /// Hands the changes applied just now to the waiters on their keys.
    func deliverKeyChanges() {
        guard !keyChanges.isEmpty else { return }
        let changes = keyChanges
        keyChanges.removeAll()
        for (_, events) in changes {
            for event in events {
                for id in keyWaits.waiters(of: event.kv.key) { keyWaiters[id]?.onChange(event) }
            }
        }
    }

    /// A leader's snapshot replaced the store: each waiter looks at it.
    func recheckKeyWaiters() {
        keyChanges.removeAll()
        for id in keyWaiters.keys.sorted() { keyWaiters[id]?.recheck() }
    }

    // MARK: Requests on the caller's behalf

    /// etcd's session for a call: the lease it names, or for none a new
    /// lease of `sessionTTL` seconds. `done` gets the lease's ID.
    func sessionLease(_ requested: Int64, picked: Int64, _ done: @escaping (Result<Int64, GRPCStatus>) -> Void) {
        guard requested == 0 else { return done(.success(requested)) }
        var grant = Etcdserverpb_LeaseGrantRequest()
        grant.ttl = Self.sessionTTL
        grant.id = picked
        guard let bytes: [UInt8] = try? grant.serializedBytes() else {
            return done(.failure(GRPCStatus(.internal, "grpc: error marshalling request")))
        }
        propose(.leaseGrant, bytes, .leaseGrant(grant)) { outcome in done(outcome.map { _ in picked }) }
    }

    /// The lease a request names, or one picked for `sessionLease` to grant.
    func leaseOrNew(_ requested: Int64) -> Int64 { requested != 0 ? requested : newLeaseID() }

    /// Proposes a write made for `call` (checked against its caller's
    /// permissions first; nil: the server's own clean-up), and decodes its
    /// response.
    func proposeFor<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ call: GRPCCall?, _ kind: LogEntryKind, _ request: Request,
        _ done: @escaping (Result<Response, GRPCStatus>) -> Void
    ) {
        do {
            let bytes: [UInt8] = try request.serializedBytes()
            // A lock's or a candidate's request holds its name twice.
            guard bytes.count <= config.maxRequestBytes else {
                return done(.failure(GRPCStatus(.invalidArgument, EtcdMessage.requestTooLarge)))
            }
            let decoded = try DecodedWrite(kind, bytes)
            if let call { try authorize(call, decoded) }
            propose(kind, bytes, decoded) { outcome in
                done(outcome.flatMap { buffer in
                    do {
                        return .success(try buffer.withUnsafeMessageBytes { try Response(serializedBytes: Array($0)) })
                    } catch {
                        return .failure(GRPCStatus(.internal, "grpc: error unmarshalling response: \(error)"))
                    }
                })
            }
        } catch let error as AuthError {
            done(.failure(GRPCStatus(error)))
        } catch let error as any EtcdStatusError {
            done(.failure(GRPCStatus(error)))
        } catch {
            done(.failure(GRPCStatus(.internal, "\(error)")))
        }
    }

    /// Proposes a transaction of the server's own (a place given up, or a
    /// candidate resigned, for a call that ended), answered to no one.
    func proposeCleanUp(_ t: Etcdserverpb_TxnRequest) {
        proposeFor(nil, .txn, t) { (_: TxnOutcome) in }
    }

    /// The first key made under `prefix` (a lock's holder, an election's
    /// leader), now or as it was at `revision`.
    func firstCreated(under prefix: [UInt8], at revision: Int64 = 0) throws -> KeyValue? {
        var r = RangeRequest(key: prefix, rangeEnd: prefixRangeEnd(prefix))
        r.sortTarget = .create
        r.sortOrder = .ascend
        r.limit = 1
        r.revision = revision
        return try store.range(r).kvs.first
    }

    /// Takes a place in the queue of `name` for the lease named (none: a
    /// new session lease), valued `value`, or finds the place that lease
    /// has: `done` gets it and the transaction's response. The caller's
    /// permissions are checked before a lease is granted for it.
    func takePlace(in name: Data, lease requested: Int64, value: Data, for call: GRPCCall,
                   _ done: @escaping (Result<(place: QueuePlace, response: Etcdserverpb_TxnResponse), GRPCStatus>) -> Void) {
        var place = QueuePlace(name: name, lease: leaseOrNew(requested))
        let take = Self.placeTransaction(place.key, value: value, lease: place.lease)
        if let refused = refusal(call, take, readingPrefix: place.prefix) { return done(.failure(refused)) }
        sessionLease(requested, picked: place.lease) { [unowned self] granted in
            if case .failure(let status) = granted { return done(.failure(status)) }
            proposeFor(call, .txn, take) { (taken: TxnOutcome) in
                done(taken.flatMap { response in
                    guard let revision = Self.placeRevision(response) else {
                        return .failure(GRPCStatus(.internal, "swetcd: the queue place's key vanished"))
                    }
                    place.createRevision = revision
                    return .success((place, response))
                })
            }
        }
    }

    // MARK: Waiting for a turn

    /// Waits until no key under the place's prefix made before its key is
    /// left (clientv3's waitDeletes, each time on the delete of the last
    /// key made before it), then `outcome` gets the header of that moment.
    /// If the place's key goes first (its lease expired or was revoked)
    /// the wait ends with `lost`. If the call closes first (its deadline,
    /// or its client gave up) `abandoned` runs instead, and no outcome.
    func waitForTurn(_ place: QueuePlace, of call: GRPCCall, lost: GRPCStatus, abandoned: @escaping () -> Void,
                     _ outcome: @escaping (Result<Etcdserverpb_ResponseHeader, GRPCStatus>) -> Void) {
        let waiter = KeyWaiter()
        let id = startWaiting(waiter)
        var ended = false
        func end(_ result: Result<Etcdserverpb_ResponseHeader, GRPCStatus>?) {
            guard !ended else { return }
            ended = true
            stopWaiting(id)
            if let result { outcome(result) } else { abandoned() }
        }
        func look() {
            guard !ended else { return }
            do {
                guard let own = try store.range(RangeRequest(key: place.key)).kvs.first,
                      own.createRevision == place.createRevision else { return end(.failure(lost)) }
                var before = RangeRequest(key: place.prefix, rangeEnd: prefixRangeEnd(place.prefix))
                before.sortTarget = .create
                before.sortOrder = .descend
                before.limit = 1
                before.maxCreateRevision = place.createRevision - 1
                if let last = try store.range(before).kvs.first {
                    keyWaits.wait(id, onKeys: [last.key, place.key])
                } else {
                    end(.success(header()))
                }
            } catch let error as any EtcdStatusError {
                end(.failure(GRPCStatus(error)))
            } catch {
                end(.failure(GRPCStatus(.unknown, "\(error)")))
            }
        }
        waiter.onChange = { event in if event.kind == .delete { look() } }
        waiter.recheck = look
        call.onClose = { end(nil) }
        // Closed while its place was being made: nobody waits.
        if call.isClosed { return end(nil) }
        look()
    }

    /// A transaction that makes `key` (with `value`, under `lease`) unless
    /// it is there, and otherwise reads it: a queue place, new or held.
    static func placeTransaction(_ key: [UInt8], value: Data, lease: Int64) -> Etcdserverpb_TxnRequest {
        var t = Etcdserverpb_TxnRequest()
        t.compare = [Self.createRevision(of: key, is: 0)]
        var put = Etcdserverpb_PutRequest()
        (put.key, put.value, put.lease) = (Data(key), value, lease)
        var get = Etcdserverpb_RangeRequest()
        get.key = Data(key)
        t.success = [.with { $0.request = .requestPut(put) }]
        t.failure = [.with { $0.request = .requestRange(get) }]
        return t
    }

    /// A transaction that deletes `key` (when `revision` is given, only
    /// while its create revision is that).
    static func deleting(_ key: [UInt8], ifCreatedAt revision: Int64? = nil) -> Etcdserverpb_TxnRequest {
        var t = Etcdserverpb_TxnRequest()
        if let revision { t.compare = [createRevision(of: key, is: revision)] }
        var delete = Etcdserverpb_DeleteRangeRequest()
        delete.key = Data(key)
        t.success = [.with { $0.request = .requestDeleteRange(delete) }]
        return t
    }

    /// The compare `create_revision(key) == revision`.
    static func createRevision(of key: [UInt8], is revision: Int64) -> Etcdserverpb_Compare {
        var c = Etcdserverpb_Compare()
        c.key = Data(key)
        c.target = .create
        c.result = .equal
        c.targetUnion = .createRevision(revision)
        return c
    }

    /// The create revision of the place `placeTransaction` made or found.
    static func placeRevision(_ r: Etcdserverpb_TxnResponse) -> Int64? {
        if r.succeeded { return r.header.revision }
        guard case .responseRange(let got)? = r.responses.first?.response else { return nil }
        return got.kvs.first?.createRevision
    }

    /// The status a transaction made for `call` is refused with, if any;
    /// with `readingPrefix`, also if the caller may not read the keys
    /// under it (a waiter reads them: etcd's through the caller's client).
    func refusal(_ call: GRPCCall, _ t: Etcdserverpb_TxnRequest, readingPrefix prefix: [UInt8]? = nil) -> GRPCStatus? {
        do {
            try authorize(call, txn: Wire.txn(t))
            if let prefix { try authorize(call, range: RangeRequest(key: prefix, rangeEnd: prefixRangeEnd(prefix))) }
            return nil
        } catch let error as any EtcdStatusError {
            return GRPCStatus(error)
        } catch {
            return GRPCStatus(.internal, "\(error)")
        }
    }

    /// How a Lock or Election call is answered with a result. etcd's
    /// services make their requests through a client and return its
    /// errors as plain Go errors, so every error reaches their clients as
    /// UNKNOWN with the message it had.
    func answer<Response: SwiftProtobuf.Message>(_ call: GRPCCall, _ key: ServerMetrics.CallKey)
        -> (Result<Response, GRPCStatus>) -> Void {
        { [unowned self] result in
            switch result {
            case .success(let response): respond(call, key, response)
            case .failure(let status): finish(call, key, status: GRPCStatus(.unknown, status.message))
            }
        }
    }
}
