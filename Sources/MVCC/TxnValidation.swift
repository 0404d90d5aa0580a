// Request checks made before anything is applied, as etcd's API layer makes
// them (etcd: v3rpc/key.go), in the same order so the same error wins.

extension RangeRequest {
    func validate() throws {
        if key.isEmpty { throw MVCCError.keyNotProvided }
    }
}

extension PutRequest {
    func validate() throws {
        if key.isEmpty { throw MVCCError.keyNotProvided }
        if ignoreValue && !value.isEmpty { throw MVCCError.valueProvided }
        if ignoreLease && lease != 0 { throw MVCCError.leaseProvided }
    }
}

extension DeleteRangeRequest {
    func validate() throws {
        if key.isEmpty { throw MVCCError.keyNotProvided }
    }
}

extension RequestOp {
    func validate(maxTxnOps: Int) throws {
        switch self {
        case .range(let r): try r.validate()
        case .put(let p): try p.validate()
        case .deleteRange(let d): try d.validate()
        case .txn(let t): try t.validateShape(maxTxnOps: maxTxnOps)
        }
    }
}

extension TxnRequest {
    /// Operation counts and per-operation checks, then the key-overlap rule.
    func validate(maxTxnOps: Int) throws {
        try validateShape(maxTxnOps: maxTxnOps)
        _ = try Self.writtenKeys(success)
        _ = try Self.writtenKeys(failure)
    }

    func validateShape(maxTxnOps: Int) throws {
        if max(compare.count, success.count, failure.count) > maxTxnOps {
            throw MVCCError.tooManyOperations
        }
        for c in compare where c.key.isEmpty { throw MVCCError.keyNotProvided }
        for op in success { try op.validate(maxTxnOps: maxTxnOps) }
        for op in failure { try op.validate(maxTxnOps: maxTxnOps) }
    }

    /// The keys one branch puts and the ranges it deletes, nested txns
    /// included. A key may be written once per txn: a put may not repeat a
    /// key nor fall in a deleted range (deletes may overlap each other), and
    /// the two branches of a nested txn may put the same key since only one
    /// of them runs.
    static func writtenKeys(_ ops: [RequestOp]) throws -> (puts: Set<[UInt8]>, deletes: [KeyRange]) {
        var deletes: [KeyRange] = []
        for case .deleteRange(let d) in ops {
            deletes.append(KeyRange(key: d.key, rangeEnd: d.rangeEnd))
        }
        func deleted(_ key: [UInt8]) -> Bool { deletes.contains { $0.contains(key) } }

        var puts = Set<[UInt8]>()
        for case .txn(let nested) in ops {
            let then = try writtenKeys(nested.success)
            let otherwise = try writtenKeys(nested.failure)
            for k in then.puts {
                if puts.contains(k) || deleted(k) { throw MVCCError.duplicateKey }
                puts.insert(k)
            }
            for k in otherwise.puts {
                if puts.contains(k) && !then.puts.contains(k) { throw MVCCError.duplicateKey }
                if deleted(k) { throw MVCCError.duplicateKey }
                puts.insert(k)
            }
            deletes += then.deletes + otherwise.deletes
        }
        for case .put(let p) in ops {
            if puts.contains(p.key) || deleted(p.key) { throw MVCCError.duplicateKey }
            puts.insert(p.key)
        }
        return (puts, deletes)
    }
}
