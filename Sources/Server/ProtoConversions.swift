import EtcdProto
import Foundation
import MVCC

// Between etcd's wire messages (EtcdProto) and the store's own types (MVCC).
// The wire's `bytes` are Foundation `Data`; each crosses over once here.

enum Wire {
    static func range(_ r: Etcdserverpb_RangeRequest) throws -> RangeRequest {
        var out = RangeRequest(key: [UInt8](r.key), rangeEnd: [UInt8](r.rangeEnd))
        out.limit = r.limit
        out.revision = r.revision
        guard let order = RangeRequest.SortOrder(rawValue: r.sortOrder.rawValue),
              let target = RangeRequest.SortTarget(rawValue: r.sortTarget.rawValue) else {
            throw MVCCError.invalidSortOption
        }
        out.sortOrder = order
        out.sortTarget = target
        out.keysOnly = r.keysOnly
        out.countOnly = r.countOnly
        out.minModRevision = r.minModRevision
        out.maxModRevision = r.maxModRevision
        out.minCreateRevision = r.minCreateRevision
        out.maxCreateRevision = r.maxCreateRevision
        return out
    }

    static func put(_ p: Etcdserverpb_PutRequest) -> PutRequest {
        var out = PutRequest(key: [UInt8](p.key), value: [UInt8](p.value), lease: p.lease)
        out.prevKV = p.prevKv
        out.ignoreValue = p.ignoreValue
        out.ignoreLease = p.ignoreLease
        return out
    }

    static func delete(_ d: Etcdserverpb_DeleteRangeRequest) -> DeleteRangeRequest {
        DeleteRangeRequest(key: [UInt8](d.key), rangeEnd: [UInt8](d.rangeEnd), prevKV: d.prevKv)
    }

    static func compare(_ c: Etcdserverpb_Compare) -> Compare {
        // A target whose union carries another field compares with zero, as
        // etcd's does.
        func int(_ v: Int64?) -> Int64 { v ?? 0 }
        let target: Compare.Target
        switch c.target {
        case .version:
            if case .version(let v)? = c.targetUnion { target = .version(v) } else { target = .version(0) }
        case .create:
            if case .createRevision(let v)? = c.targetUnion { target = .createRevision(v) } else { target = .createRevision(0) }
        case .mod:
            if case .modRevision(let v)? = c.targetUnion { target = .modRevision(v) } else { target = .modRevision(0) }
        case .value:
            if case .value(let v)? = c.targetUnion { target = .value([UInt8](v)) } else { target = .value([]) }
        case .lease:
            if case .lease(let v)? = c.targetUnion { target = .lease(v) } else { target = .lease(0) }
        case .UNRECOGNIZED:
            target = .version(0)
        }
        let result: Compare.Result
        switch c.result {
        case .equal: result = .equal
        case .greater: result = .greater
        case .less: result = .less
        case .notEqual: result = .notEqual
        case .UNRECOGNIZED: result = .equal
        }
        return Compare(key: [UInt8](c.key), rangeEnd: [UInt8](c.rangeEnd), target: target, result: result)
    }

    static func txn(_ t: Etcdserverpb_TxnRequest) throws -> TxnRequest {
        func op(_ o: Etcdserverpb_RequestOp) throws -> RequestOp {
            switch o.request {
            case .requestRange(let r): return .range(try range(r))
            case .requestPut(let p): return .put(put(p))
            case .requestDeleteRange(let d): return .deleteRange(delete(d))
            case .requestTxn(let t): return .txn(try txn(t))
            case nil: return .txn(TxnRequest())  // an empty op: nothing to do
            }
        }
        return TxnRequest(compare: t.compare.map(compare), success: try t.success.map(op), failure: try t.failure.map(op))
    }

    static func keyValue(_ kv: KeyValue) -> Mvccpb_KeyValue {
        var out = Mvccpb_KeyValue()
        out.key = Data(kv.key)
        out.createRevision = kv.createRevision
        out.modRevision = kv.modRevision
        out.version = kv.version
        out.value = Data(kv.value)
        out.lease = kv.lease
        return out
    }

    static func rangeResponse(_ r: RangeResult, header: Etcdserverpb_ResponseHeader) -> Etcdserverpb_RangeResponse {
        var out = Etcdserverpb_RangeResponse()
        out.header = header
        out.kvs = r.kvs.map(keyValue)
        out.more = r.more
        out.count = r.count
        return out
    }

    static func putResponse(_ r: PutResult, header: Etcdserverpb_ResponseHeader) -> Etcdserverpb_PutResponse {
        var out = Etcdserverpb_PutResponse()
        out.header = header
        if let prev = r.prevKV { out.prevKv = keyValue(prev) }
        return out
    }

    static func deleteResponse(_ r: DeleteRangeResult, header: Etcdserverpb_ResponseHeader) -> Etcdserverpb_DeleteRangeResponse {
        var out = Etcdserverpb_DeleteRangeResponse()
        out.header = header
        out.deleted = r.deleted
        out.prevKvs = r.prevKVs.map(keyValue)
        return out
    }

    /// Inner responses carry a header with only the revision, as etcd's do.
    static func txnResponse(_ r: TxnResult, header: Etcdserverpb_ResponseHeader) -> Etcdserverpb_TxnResponse {
        func revisionOnly(_ rev: Int64) -> Etcdserverpb_ResponseHeader {
            var h = Etcdserverpb_ResponseHeader()
            h.revision = rev
            return h
        }
        var out = Etcdserverpb_TxnResponse()
        out.header = header
        out.succeeded = r.succeeded
        out.responses = r.responses.map { op in
            var o = Etcdserverpb_ResponseOp()
            switch op {
            case .range(let x): o.response = .responseRange(rangeResponse(x, header: revisionOnly(x.revision)))
            case .put(let x): o.response = .responsePut(putResponse(x, header: revisionOnly(x.revision)))
            case .deleteRange(let x): o.response = .responseDeleteRange(deleteResponse(x, header: revisionOnly(x.revision)))
            case .txn(let x): o.response = .responseTxn(txnResponse(x, header: revisionOnly(x.revision)))
            }
            return o
        }
        return out
    }
}
