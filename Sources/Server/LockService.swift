import EtcdProto
import EtcdStatus
import Foundation
import MVCC
import SwiftProtobuf
import Transport

/// v3lockpb.Lock: Lock and Unlock, as etcd's v3lock serves them with
/// clientv3's concurrency.Mutex. A lock is the key `name/<lease in hex>`
/// made under the caller's lease; the holder is the key of that name made
/// first. The key layout is the client recipe's, so `etcdctl lock` and
/// this service exclude each other.
extension EtcdServer {
    /// etcd 3.5's error for a waiter whose key went while it waited.
    static let mutexSessionExpired = "mutex: session is expired"

    func registerLock() {
        let service = "v3lockpb.Lock"
        answeringLater(service, "Lock", access: .anyone) { [unowned self] (r: V3lockpb_LockRequest, call, key) in
            lock(r, call, answer(call, key))
        }
        answeringLater(service, "Unlock", access: .anyone) { [unowned self] (r: V3lockpb_UnlockRequest, call, key) in
            var delete = Etcdserverpb_DeleteRangeRequest()
            delete.key = r.key
            proposeFor(call, .deleteRange, delete) { [unowned self] (result: Result<Etcdserverpb_DeleteRangeResponse, GRPCStatus>) in
                let done: (Result<V3lockpb_UnlockResponse, GRPCStatus>) -> Void = answer(call, key)
                done(result.map { deleted in .with { $0.header = deleted.header } })
            }
        }
    }

    /// Takes a place in the lock's queue (or finds the one this lease
    /// has), then waits for its turn. A wait that ends without the lock
    /// gives the place up, as Mutex.Lock does.
    private func lock(_ r: V3lockpb_LockRequest, _ call: GRPCCall,
                      _ done: @escaping (Result<V3lockpb_LockResponse, GRPCStatus>) -> Void) {
        var place = QueuePlace(name: r.name, lease: leaseOrNew(r.lease))
        let take = Self.takePlace(place.key, value: Data(), lease: place.lease)
        // Checked before a lease is granted for the call.
        if let refused = refusal(call, take, readingPrefix: place.prefix) { return done(.failure(refused)) }
        sessionLease(r.lease, picked: place.lease) { [unowned self] granted in
            if case .failure(let status) = granted { return done(.failure(status)) }
            proposeFor(call, .txn, take) { [unowned self] (taken: TxnOutcome) in
                switch taken {
                case .failure(let status):
                    done(.failure(status))
                case .success(let response):
                    guard let revision = Self.placeRevision(response) else {
                        return done(.failure(GRPCStatus(.internal, "swetcd: the lock's key vanished")))
                    }
                    place.createRevision = revision
                    let key = place.key
                    let lost = GRPCStatus(.unknown, Self.mutexSessionExpired)
                    waitForTurn(place, of: call, lost: lost, abandoned: { [unowned self] in proposeCleanUp(Self.deleting(key)) }) { held in
                        done(held.map { header in .with { $0.header = header; $0.key = Data(key) } })
                    }
                }
            }
        }
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
