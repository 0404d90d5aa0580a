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
        takePlace(in: r.name, lease: r.lease, value: Data(), for: call) { [unowned self] taken in
            switch taken {
            case .failure(let status):
                done(.failure(status))
            case .success(let (place, _)):
                let key = place.key
                let lost = GRPCStatus(.unknown, Self.mutexSessionExpired)
                waitForTurn(place, of: call, lost: lost, abandoned: { [unowned self] in proposeCleanUp(Self.deleting(key)) }) { held in
                    done(held.map { header in .with { $0.header = header; $0.key = Data(key) } })
                }
            }
        }
    }
}
