import EtcdProto
import MVCC
import Transport

/// etcdserverpb.KV: Range, Put, DeleteRange, Txn, Compact.
extension EtcdServer {
    func registerKV() {
        let kv = "etcdserverpb.KV"
        unary(kv, "Range") { [unowned self] (r: Etcdserverpb_RangeRequest, _) -> Reply<Etcdserverpb_RangeResponse> in
            let result = try store.range(Wire.range(r))
            return .now(Wire.rangeResponse(result, header: header(revision: result.revision)))
        }
        unary(kv, "Put", isWrite: true) { [unowned self] (p: Etcdserverpb_PutRequest, _) -> Reply<Etcdserverpb_PutResponse> in
            let result = try store.put(Wire.put(p))
            appliedIndex += 1
            return .afterCommit(Wire.putResponse(result, header: header(revision: result.revision)))
        }
        unary(kv, "DeleteRange", isWrite: true) { [unowned self] (d: Etcdserverpb_DeleteRangeRequest, _) -> Reply<Etcdserverpb_DeleteRangeResponse> in
            let result = try store.deleteRange(Wire.delete(d))
            appliedIndex += 1
            return .afterCommit(Wire.deleteResponse(result, header: header(revision: result.revision)))
        }
        unary(kv, "Txn", isWrite: true) { [unowned self] (t: Etcdserverpb_TxnRequest, _) -> Reply<Etcdserverpb_TxnResponse> in
            let request = try Wire.txn(t)
            let result = try store.txn(request)
            let response = Wire.txnResponse(result, header: header(revision: result.revision))
            // A txn that cannot write is served like a read, as etcd does.
            guard request.mayWrite else { return .now(response) }
            appliedIndex += 1
            return .afterCommit(response)
        }
        unary(kv, "Compact", isWrite: true) { [unowned self] (c: Etcdserverpb_CompactionRequest, call) -> Reply<Etcdserverpb_CompactionResponse> in
            try store.compact(c.revision)
            appliedIndex += 1
            var response = Etcdserverpb_CompactionResponse()
            response.header = header()
            logger.info("compaction scheduled", metadata: ["revision": "\(c.revision)"])
            let key = Metrics.CallKey(type: "unary", service: kv, method: "Compact")
            if c.physical {
                // Answer once the backend holds none of the compacted history.
                afterCompaction { [unowned self] in self.afterCommit { self.respond(call, key, response) } }
                return .later
            }
            startCompaction()
            return .afterCommit(response)
        }
    }
}

extension TxnRequest {
    /// Whether any branch holds a put or delete (etcd's !isTxnReadonly).
    var mayWrite: Bool {
        func writes(_ ops: [RequestOp]) -> Bool {
            ops.contains {
                switch $0 {
                case .put, .deleteRange: return true
                case .range: return false
                case .txn(let t): return t.mayWrite
                }
            }
        }
        return writes(success) || writes(failure)
    }
}
