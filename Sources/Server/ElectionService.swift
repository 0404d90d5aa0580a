import Auth
import EtcdProto
import EtcdStatus
import Foundation
import MVCC
import SwiftProtobuf
import Transport

/// v3electionpb.Election: Campaign, Proclaim, Leader, Observe, Resign, as
/// etcd's v3election serves them with clientv3's concurrency.Election. A
/// candidate is the key `name/<lease in hex>` made under its lease, valued
/// with its proposal; the leader is the key of that name made first.
/// etcd's errors are plain Go errors, so gRPC's UNKNOWN.
extension EtcdServer {
    static let electionNotLeader = "election: not leader"
    static let electionNoLeader = "election: no leader"
    /// swetcd's: a candidate whose key went while it waited (etcd would
    /// answer it as leader once the keys before it were gone).
    static let electionSessionExpired = "election: session is expired"
    static let missingLeaderKey = #""leader" field must be provided"#
    /// An Observe call whose client has this much unread is ended: the
    /// server keeps no more for it.
    static let observeBacklogBytes = 1 << 20

    func registerElection() {
        let service = "v3electionpb.Election"
        answeringLater(service, "Campaign", access: .anyone) { [unowned self] (r: V3electionpb_CampaignRequest, call, key) in
            campaign(r, call, answer(call, key))
        }
        answeringLater(service, "Proclaim", access: .anyone) { [unowned self] (r: V3electionpb_ProclaimRequest, call, key) in
            let done: (Result<V3electionpb_ProclaimResponse, GRPCStatus>) -> Void = answer(call, key)
            guard r.hasLeader else { return done(.failure(GRPCStatus(.unknown, Self.missingLeaderKey))) }
            // etcd's server makes a session for the call: with no lease
            // named, a new one, which the leader's key then takes.
            let lease = leaseOrNew(r.leader.lease)
            let proclaim = Self.proclaim(r.leader, value: r.value, lease: lease)
            if let refused = refusal(call, proclaim) { return done(.failure(refused)) }
            sessionLease(r.leader.lease, picked: lease) { [unowned self] granted in
                if case .failure(let status) = granted { return done(.failure(status)) }
                proposeFor(call, .txn, proclaim) { (result: TxnOutcome) in
                    done(result.flatMap { t in
                        t.succeeded ? .success(.with { $0.header = t.header }) : .failure(GRPCStatus(.unknown, Self.electionNotLeader))
                    })
                }
            }
        }
        answeringLater(service, "Resign", access: .anyone) { [unowned self] (r: V3electionpb_ResignRequest, call, key) in
            let done: (Result<V3electionpb_ResignResponse, GRPCStatus>) -> Void = answer(call, key)
            guard r.hasLeader else { return done(.failure(GRPCStatus(.unknown, Self.missingLeaderKey))) }
            let resign = Self.deleting([UInt8](r.leader.key), ifCreatedAt: r.leader.rev)
            proposeFor(call, .txn, resign) { (result: TxnOutcome) in
                done(result.map { t in .with { $0.header = t.header } })
            }
        }
        answeringLater(service, "Leader", access: .anyone) { [unowned self] (r: V3electionpb_LeaderRequest, call, key) in
            let done: (Result<V3electionpb_LeaderResponse, GRPCStatus>) -> Void = answer(call, key)
            let prefix = [UInt8](r.name) + [UInt8(ascii: "/")]
            do throws(AuthError) {
                try authorize(call, range: RangeRequest(key: prefix, rangeEnd: prefixRangeEnd(prefix)))
            } catch {
                return done(.failure(GRPCStatus(error)))
            }
            linearizably { [unowned self] in
                do {
                    guard let leader = try firstCreated(under: prefix) else {
                        return done(.failure(GRPCStatus(.unknown, Self.electionNoLeader)))
                    }
                    done(.success(.with {
                        $0.header = header()
                        $0.kv = Wire.keyValue(leader)
                    }))
                } catch let error as any EtcdStatusError {
                    done(.failure(GRPCStatus(error)))
                } catch {
                    done(.failure(GRPCStatus(.unknown, "\(error)")))
                }
            }
        }
        let observeKey = metrics.key(type: "server_stream", service: service, method: "Observe")
        register(service, "Observe", .serverStreaming) { [unowned self] call, bytes in
            guard let r = try? V3electionpb_LeaderRequest(serializedBytes: bytes) else {
                return finish(call, observeKey, status: GRPCStatus(.internal, "grpc: error unmarshalling request"))
            }
            observe(r.name, call, observeKey)
        }
    }

    /// Takes a place among the candidates (or finds the one this lease
    /// has, proclaiming the new value if it differs), then waits until it
    /// leads. A wait its client gives up resigns, as Election.Campaign does.
    private func campaign(_ r: V3electionpb_CampaignRequest, _ call: GRPCCall,
                          _ done: @escaping (Result<V3electionpb_CampaignResponse, GRPCStatus>) -> Void) {
        takePlace(in: r.name, lease: r.lease, value: r.value, for: call) { [unowned self] taken in
            let (place, response): (QueuePlace, Etcdserverpb_TxnResponse)
            switch taken {
            case .failure(let status): return done(.failure(status))
            case .success(let t): (place, response) = t
            }
            var leader = V3electionpb_LeaderKey()
            (leader.name, leader.key, leader.rev, leader.lease) = (r.name, Data(place.key), place.createRevision, place.lease)
            let resign = Self.deleting(place.key, ifCreatedAt: place.createRevision)
            let wait = { [unowned self] in
                let lost = GRPCStatus(.unknown, Self.electionSessionExpired)
                waitForTurn(place, of: call, lost: lost, abandoned: { [unowned self] in proposeCleanUp(resign) }) { leads in
                    done(leads.map { _ in .with { $0.header = response.header; $0.leader = leader } })
                }
            }
            // The lease's key was there with another value: proclaim this
            // one first (and resign if that fails).
            guard !response.succeeded, case .responseRange(let got)? = response.responses.first?.response,
                  got.kvs.first?.value != r.value else { return wait() }
            proposeFor(call, .txn, Self.proclaim(leader, value: r.value, lease: place.lease)) { [unowned self] (result: TxnOutcome) in
                switch result {
                case .success(let t) where t.succeeded:
                    wait()
                case .success:
                    proposeCleanUp(resign)
                    done(.failure(GRPCStatus(.unknown, Self.electionNotLeader)))
                case .failure(let status):
                    done(.failure(status))
                }
            }
        }
    }

    /// Puts the leader's new value while its key is still the one it made.
    static func proclaim(_ leader: V3electionpb_LeaderKey, value: Data, lease: Int64) -> Etcdserverpb_TxnRequest {
        var t = Etcdserverpb_TxnRequest()
        t.compare = [createRevision(of: [UInt8](leader.key), is: leader.rev)]
        var put = Etcdserverpb_PutRequest()
        (put.key, put.value, put.lease) = (leader.key, value, lease)
        t.success = [.with { $0.request = .requestPut(put) }]
        return t
    }

    /// Streams the election's leader now (if any), then every value it
    /// proclaims and every leader after it, in the order applied
    /// (Election.Observe). The stream ends when its client goes, or when
    /// it has `observeBacklogBytes` unread.
    private func observe(_ name: Data, _ call: GRPCCall, _ key: ServerMetrics.CallKey) {
        let prefix = [UInt8](name) + [UInt8(ascii: "/")]
        do throws(AuthError) {
            try authorize(call, range: RangeRequest(key: prefix, rangeEnd: prefixRangeEnd(prefix)))
        } catch {
            return finish(call, key, status: GRPCStatus(error))
        }
        linearizably { [unowned self] in
            guard !call.isClosed else { return }
            let waiter = KeyWaiter()
            let id = startWaiting(waiter)
            /// The leader as last sent.
            var following: KeyValue?
            var ended = false
            func end(_ status: GRPCStatus?) {
                guard !ended else { return }
                ended = true
                stopWaiting(id)
                if let status { finish(call, key, status: status) }
            }
            func send(_ kv: KeyValue, revision: Int64) {
                guard call.queuedBytes < Self.observeBacklogBytes else {
                    return end(GRPCStatus(.resourceExhausted, "swetcd: the observer has over \(Self.observeBacklogBytes >> 20) MiB unread"))
                }
                var r = V3electionpb_LeaderResponse()
                r.header = header(revision: revision)
                r.kv = Wire.keyValue(kv)
                guard let message = try? r.serializedBytes() as GRPCMessageBuffer else { return }
                call.send(message)
                following = kv
            }
            /// The leader as of `revision`; as of now if that is compacted.
            func leader(at revision: Int64) -> KeyValue? {
                do {
                    return try firstCreated(under: prefix, at: revision)
                } catch {
                    return (try? firstCreated(under: prefix)) ?? nil
                }
            }
            waiter.onChange = { event in
                guard !ended else { return }
                let revision = event.kv.modRevision
                guard let current = following else {
                    // None led: the first key made leads.
                    if event.kind == .put { send(event.kv, revision: revision) }
                    return
                }
                guard event.kv.key == current.key else { return }
                if event.kind == .put { return send(event.kv, revision: revision) }
                following = nil
                if let next = leader(at: revision) { send(next, revision: revision) }
            }
            waiter.recheck = { [unowned self] in
                guard !ended else { return }
                let now = leader(at: 0)
                guard now?.key != following?.key || now?.modRevision != following?.modRevision else { return }
                following = nil
                if let now { send(now, revision: store.currentRevision) }
            }
            call.onClose = { end(nil) }
            keyWaits.wait(id, onPrefix: prefix)
            if let now = leader(at: 0) { send(now, revision: store.currentRevision) }
        }
    }
}
