import EtcdProto
import EtcdStatus
import MVCC
import SwiftProtobuf
import Transport

/// etcdserverpb.KV: Range, Put, DeleteRange, Txn, Compact.
extension EtcdServer {
    func registerKV() {
        let kv = "etcdserverpb.KV"
        let rangeKey = metrics.key(type: "unary", service: kv, method: "Range")
        unary(kv, "Range", access: .anyone) { [unowned self] (r: Etcdserverpb_RangeRequest, call) -> Reply<Etcdserverpb_RangeResponse> in
            if isLearner && !r.serializable { throw GRPCStatus(.failedPrecondition, EtcdMessage.notSupportedForLearner) }
            let request = try Wire.range(r)
            try authorize(call, range: request)
            let serve = { [unowned self] () throws -> Etcdserverpb_RangeResponse in
                let result = try store.range(request)
                return Wire.rangeResponse(result, header: header(revision: result.revision))
            }
            // Linearizable reads see every write committed before them.
            if r.serializable || member.canReadNow { return .now(try serve()) }
            let key = rangeKey
            linearizably { [unowned self] in
                do { respond(call, key, try serve()) } catch let e as any EtcdStatusError {
                    finish(call, key, status: GRPCStatus(e))
                } catch {
                    finish(call, key, status: GRPCStatus(.unknown, "\(error)"))
                }
            }
            return .later
        }
        proposing(kv, "Put", .put)
        proposing(kv, "DeleteRange", .deleteRange)
        proposing(kv, "Compact", .compact)
        let txnKey = metrics.key(type: "unary", service: kv, method: "Txn")
        register(kv, "Txn", .unary) { [unowned self] call, bytes in
            let key = txnKey
            do {
                let request = try Wire.txn(Etcdserverpb_TxnRequest(serializedBytes: bytes))
                try authorize(call, txn: request)
                if request.mayWrite {
                    guard bytes.count <= config.maxRequestBytes else {
                        finish(call, key, status: GRPCStatus(.invalidArgument, EtcdMessage.requestTooLarge))
                        return
                    }
                    propose(.txn, bytes, .txn(request)) { [unowned self] outcome in reply(call, key, outcome) }
                } else {
                    // A txn that cannot write is served like a linearizable read.
                    linearizably { [unowned self] in
                        do {
                            let r = try store.txn(request)
                            respond(call, key, Wire.txnResponse(r, header: header(revision: r.revision)))
                        } catch let e as any EtcdStatusError {
                            finish(call, key, status: GRPCStatus(e))
                        } catch {
                            finish(call, key, status: GRPCStatus(.unknown, "\(error)"))
                        }
                    }
                }
            } catch let e as any EtcdStatusError {
                finish(call, key, status: GRPCStatus(e))
            } catch {
                finish(call, key, status: GRPCStatus(.internal, "grpc: error unmarshalling request: \(error)"))
            }
        }
    }

    /// A write method: checked (decodable, within --max-request-bytes),
    /// then proposed as a log entry and answered once applied.
    func proposing(_ service: String, _ method: String, _ kind: LogEntryKind) {
        let key = metrics.key(type: "unary", service: service, method: method)
        register(service, method, .unary) { [unowned self] call, bytes in
            guard bytes.count <= config.maxRequestBytes else {
                finish(call, key, status: GRPCStatus(.invalidArgument, EtcdMessage.requestTooLarge))
                return
            }
            let decoded: DecodedWrite
            do {
                decoded = try DecodedWrite(kind, bytes)
            } catch {
                finish(call, key, status: GRPCStatus(.internal, "grpc: error unmarshalling request: \(error)"))
                return
            }
            guard passes(call, key, { try authorize(call, decoded) }) else { return }
            propose(kind, bytes, decoded) { [unowned self] outcome in reply(call, key, outcome) }
        }
    }

    func reply(_ call: GRPCCall, _ key: ServerMetrics.CallKey, _ outcome: Result<GRPCMessageBuffer, GRPCStatus>) {
        switch outcome {
        case .success(let bytes):
            call.respond(bytes)
            metrics.callHandled(key, call, code: 0)
        case .failure(let status):
            finish(call, key, status: status)
        }
    }
}

extension TxnRequest {
    /// Whether any branch holds a put or delete (etcd's !isTxnReadonly).
    var mayWrite: Bool {
        containsOp { if case .range = $0 { false } else { true } }
    }

    /// Whether any branch, nested transactions' included, holds an
    /// operation that `matches` (which never sees a nested txn itself).
    func containsOp(_ matches: (RequestOp) -> Bool) -> Bool {
        func has(_ op: RequestOp) -> Bool {
            if case .txn(let nested) = op { nested.containsOp(matches) } else { matches(op) }
        }
        return success.contains(where: has) || failure.contains(where: has)
    }
}
