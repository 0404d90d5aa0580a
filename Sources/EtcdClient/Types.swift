import EtcdProto
import Foundation

/// One version of a key.
public struct KeyValue: Equatable, Sendable {
    public var key: [UInt8]
    public var value: [UInt8]
    public var createRevision: Int64
    public var modRevision: Int64
    public var version: Int64
    public var lease: Int64

    public var keyString: String { String(decoding: key, as: UTF8.self) }
    public var valueString: String { String(decoding: value, as: UTF8.self) }

    init(_ kv: Mvccpb_KeyValue) {
        key = [UInt8](kv.key)
        value = [UInt8](kv.value)
        createRevision = kv.createRevision
        modRevision = kv.modRevision
        version = kv.version
        lease = kv.lease
    }
}

/// What every response says about the member that answered.
public struct ResponseHeader: Equatable, Sendable {
    public var clusterID: UInt64
    public var memberID: UInt64
    /// The store's revision when the request was served.
    public var revision: Int64
    public var raftTerm: UInt64

    init(_ h: Etcdserverpb_ResponseHeader) {
        clusterID = h.clusterID
        memberID = h.memberID
        revision = h.revision
        raftTerm = h.raftTerm
    }
}

/// Which keys an operation covers.
public enum KeyRange: Equatable, Sendable {
    /// One key.
    case key([UInt8])
    /// Every key starting with the prefix.
    case prefix([UInt8])
    /// Keys in [start, end).
    case range([UInt8], end: [UInt8])
    /// Every key from this one on.
    case from([UInt8])

    public static func key(_ s: String) -> KeyRange { .key(Array(s.utf8)) }
    public static func prefix(_ s: String) -> KeyRange { .prefix(Array(s.utf8)) }

    /// The range as etcd's requests carry it (`key`, `range_end`), for
    /// callers that build requests themselves.
    public var wire: (key: Data, rangeEnd: Data) {
        switch self {
        case .key(let k): return (Data(k), Data())
        case .prefix(let p): return (Data(p.isEmpty ? [0] : p), Data(Self.prefixEnd(p)))
        case .range(let s, let e): return (Data(s), Data(e))
        case .from(let s): return (Data(s), Data([0]))
        }
    }

    /// The range end for keys starting with `prefix` ("\0", every key
    /// after, when none exists).
    public static func prefixEnd(_ prefix: [UInt8]) -> [UInt8] {
        var end = prefix
        while let last = end.last {
            if last < 0xff {
                end[end.count - 1] = last + 1
                return end
            }
            end.removeLast()
        }
        return [0]
    }
}

public struct GetOptions: Sendable {
    public enum SortOrder: Int, Sendable { case none = 0, ascend, descend }
    public enum SortTarget: Int, Sendable { case key = 0, version, create, mod, value }
    public var limit: Int64 = 0
    /// 0: the newest revision.
    public var revision: Int64 = 0
    public var sortOrder = SortOrder.none
    public var sortTarget = SortTarget.key
    public var keysOnly = false
    public var countOnly = false
    /// Serve from this member without consensus (no difference on one member).
    public var serializable = false
    public var minModRevision: Int64 = 0
    public var maxModRevision: Int64 = 0
    public var minCreateRevision: Int64 = 0
    public var maxCreateRevision: Int64 = 0

    public init() {}
}

public struct GetResponse: Sendable {
    public var header: ResponseHeader
    public var kvs: [KeyValue]
    /// More keys matched than the limit let through.
    public var more: Bool
    /// How many keys matched, before limit and filters.
    public var count: Int64
}

public struct PutOptions: Sendable {
    public var lease: Int64 = 0
    public var prevKV = false
    public var ignoreValue = false
    public var ignoreLease = false
    public init() {}
}

public struct PutResponse: Sendable {
    public var header: ResponseHeader
    public var prevKV: KeyValue?
}

public struct DeleteResponse: Sendable {
    public var header: ResponseHeader
    public var deleted: Int64
    public var prevKVs: [KeyValue]
}

/// A guard of a transaction.
public struct Compare: Sendable {
    public enum Target: Sendable {
        case version(Int64)
        case createRevision(Int64)
        case modRevision(Int64)
        case value([UInt8])
        case lease(Int64)
    }
    public enum Result: Int, Sendable { case equal = 0, greater, less, notEqual }

    public var range: KeyRange
    public var target: Target
    public var result: Result

    public init(_ range: KeyRange, _ target: Target, _ result: Result) {
        self.range = range
        self.target = target
        self.result = result
    }
}

/// One operation of a transaction branch.
public indirect enum TxnOp: Sendable {
    case get(KeyRange, GetOptions = GetOptions())
    case put([UInt8], [UInt8], PutOptions = PutOptions())
    case delete(KeyRange, prevKV: Bool = false)
    case txn(compare: [Compare], success: [TxnOp], failure: [TxnOp])
}

/// The result of one transaction operation, in the order of the branch.
public indirect enum TxnOpResponse: Sendable {
    case get(GetResponse)
    case put(PutResponse)
    case delete(DeleteResponse)
    case txn(TxnResponse)
}

public struct TxnResponse: Sendable {
    public var header: ResponseHeader
    public var succeeded: Bool
    public var responses: [TxnOpResponse]
}

public struct StatusResponse: Sendable {
    public var header: ResponseHeader
    public var version: String
    public var dbSize: Int64
    public var dbSizeInUse: Int64
    public var leader: UInt64
    public var raftIndex: UInt64
    public var raftTerm: UInt64
    public var raftAppliedIndex: UInt64
    public var errors: [String]
}

public struct Member: Equatable, Sendable {
    public var id: UInt64
    public var name: String
    public var peerURLs: [String]
    public var clientURLs: [String]
    public var isLearner: Bool
}
