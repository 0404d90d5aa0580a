import EtcdProto
import Foundation

// Between the client's types and etcd's wire messages.
extension EtcdClient {
    static func rangeRequest(_ range: KeyRange, _ o: GetOptions) -> Etcdserverpb_RangeRequest {
        var r = Etcdserverpb_RangeRequest()
        (r.key, r.rangeEnd) = range.wire
        r.limit = o.limit
        r.revision = o.revision
        r.sortOrder = Etcdserverpb_RangeRequest.SortOrder(rawValue: o.sortOrder.rawValue) ?? .none
        r.sortTarget = Etcdserverpb_RangeRequest.SortTarget(rawValue: o.sortTarget.rawValue) ?? .key
        r.serializable = o.serializable
        r.keysOnly = o.keysOnly
        r.countOnly = o.countOnly
        r.minModRevision = o.minModRevision
        r.maxModRevision = o.maxModRevision
        r.minCreateRevision = o.minCreateRevision
        r.maxCreateRevision = o.maxCreateRevision
        return r
    }

    static func putRequest(_ key: [UInt8], _ value: [UInt8], _ o: PutOptions) -> Etcdserverpb_PutRequest {
        var r = Etcdserverpb_PutRequest()
        r.key = Data(key)
        r.value = Data(value)
        r.lease = o.lease
        r.prevKv = o.prevKV
        r.ignoreValue = o.ignoreValue
        r.ignoreLease = o.ignoreLease
        return r
    }

    static func deleteRequest(_ range: KeyRange, _ prevKV: Bool) -> Etcdserverpb_DeleteRangeRequest {
        var r = Etcdserverpb_DeleteRangeRequest()
        (r.key, r.rangeEnd) = range.wire
        r.prevKv = prevKV
        return r
    }

    static func txnRequest(_ compare: [Compare], _ success: [TxnOp], _ failure: [TxnOp]) -> Etcdserverpb_TxnRequest {
        func op(_ o: TxnOp) -> Etcdserverpb_RequestOp {
            var r = Etcdserverpb_RequestOp()
            switch o {
            case .get(let range, let options): r.request = .requestRange(rangeRequest(range, options))
            case .put(let k, let v, let options): r.request = .requestPut(putRequest(k, v, options))
            case .delete(let range, let prevKV): r.request = .requestDeleteRange(deleteRequest(range, prevKV))
            case .txn(let c, let s, let f): r.request = .requestTxn(txnRequest(c, s, f))
            }
            return r
        }
        func cmp(_ c: Compare) -> Etcdserverpb_Compare {
            var r = Etcdserverpb_Compare()
            (r.key, r.rangeEnd) = c.range.wire
            r.result = Etcdserverpb_Compare.CompareResult(rawValue: c.result.rawValue) ?? .equal
            switch c.target {
            case .version(let v): r.target = .version; r.targetUnion = .version(v)
            case .createRevision(let v): r.target = .create; r.targetUnion = .createRevision(v)
            case .modRevision(let v): r.target = .mod; r.targetUnion = .modRevision(v)
            case .value(let v): r.target = .value; r.targetUnion = .value(Data(v))
            case .lease(let v): r.target = .lease; r.targetUnion = .lease(v)
            }
            return r
        }
        var r = Etcdserverpb_TxnRequest()
        r.compare = compare.map(cmp)
        r.success = success.map(op)
        r.failure = failure.map(op)
        return r
    }

    static func getResponse(_ r: Etcdserverpb_RangeResponse) -> GetResponse {
        GetResponse(header: ResponseHeader(r.header), kvs: r.kvs.map(KeyValue.init), more: r.more, count: r.count)
    }

    static func putResponse(_ r: Etcdserverpb_PutResponse) -> PutResponse {
        PutResponse(header: ResponseHeader(r.header), prevKV: r.hasPrevKv ? KeyValue(r.prevKv) : nil)
    }

    static func deleteResponse(_ r: Etcdserverpb_DeleteRangeResponse) -> DeleteResponse {
        DeleteResponse(header: ResponseHeader(r.header), deleted: r.deleted, prevKVs: r.prevKvs.map(KeyValue.init))
    }

    static func txnResponse(_ r: Etcdserverpb_TxnResponse) -> TxnResponse {
        TxnResponse(header: ResponseHeader(r.header), succeeded: r.succeeded, responses: r.responses.compactMap { op in
            switch op.response {
            case .responseRange(let x): return .get(getResponse(x))
            case .responsePut(let x): return .put(putResponse(x))
            case .responseDeleteRange(let x): return .delete(deleteResponse(x))
            case .responseTxn(let x): return .txn(txnResponse(x))
            case nil: return nil
            }
        })
    }
}
