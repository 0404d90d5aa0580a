// The store's requests and results: etcd's KV messages with byte arrays in
// place of protobuf types, so the store depends on no wire format. The server
// translates between these and EtcdProto.

public struct RangeRequest: Equatable, Sendable {
    public enum SortOrder: Int, Sendable { case none = 0, ascend, descend }
    public enum SortTarget: Int, Sendable { case key = 0, version, create, mod, value }

    public var key: [UInt8]
    public var rangeEnd: [UInt8] = []
    public var limit: Int64 = 0
    public var revision: Int64 = 0
    public var sortOrder: SortOrder = .none
    public var sortTarget: SortTarget = .key
    public var keysOnly = false
    public var countOnly = false
    public var minModRevision: Int64 = 0
    public var maxModRevision: Int64 = 0
    public var minCreateRevision: Int64 = 0
    public var maxCreateRevision: Int64 = 0

    public init(key: [UInt8], rangeEnd: [UInt8] = []) {
        self.key = key
        self.rangeEnd = rangeEnd
    }
}

public struct RangeResult: Equatable, Sendable {
    public var kvs: [KeyValue]
    public var more: Bool
    /// Keys in the range at the read revision, before limit and filters.
    public var count: Int64
    /// The store's revision the read was served at (the response header's).
    public var revision: Int64
}

public struct PutRequest: Equatable, Sendable {
    public var key: [UInt8]
    public var value: [UInt8]
    public var lease: Int64 = 0
    public var prevKV = false
    public var ignoreValue = false
    public var ignoreLease = false

    public init(key: [UInt8], value: [UInt8], lease: Int64 = 0) {
        self.key = key
        self.value = value
        self.lease = lease
    }

    /// Decodes the protobuf bytes of an `etcdserverpb.PutRequest` (same
    /// field numbers) straight into arrays: the write path's hottest
    /// decode, without swift-protobuf's Data round trip. Unknown fields, and
    /// known ones with another wire type (as Go's decoder does), are
    /// skipped; malformed input yields nil.
    public init?(encoded buf: UnsafeRawBufferPointer) {
        self.init(key: [], value: [])
        var reader = ProtoReader(buf)
        while !reader.isAtEnd {
            guard let tag = reader.varint() else { return nil }
            let field = tag >> 3, wireType = tag & 7
            switch (field, wireType) {
            case (1, 2), (2, 2):
                guard let b = reader.lengthDelimited() else { return nil }
                if field == 1 { key = Array(b) } else { value = Array(b) }
            case (3, 0), (4, 0), (5, 0), (6, 0):
                guard let v = reader.varint() else { return nil }
                switch field {
                case 3: lease = Int64(bitPattern: v)
                case 4: prevKV = v != 0
                case 5: ignoreValue = v != 0
                default: ignoreLease = v != 0
                }
            default:
                guard field != 0, reader.skip(wireType: wireType) else { return nil }
            }
        }
    }
}

public struct PutResult: Equatable, Sendable {
    public var prevKV: KeyValue?
    public var revision: Int64
}

public struct DeleteRangeRequest: Equatable, Sendable {
    public var key: [UInt8]
    public var rangeEnd: [UInt8] = []
    public var prevKV = false

    public init(key: [UInt8], rangeEnd: [UInt8] = [], prevKV: Bool = false) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.prevKV = prevKV
    }
}

public struct DeleteRangeResult: Equatable, Sendable {
    public var deleted: Int64
    public var prevKVs: [KeyValue]
    public var revision: Int64
}

/// A guard of a transaction: the target of `key` (or of every key in
/// [key, rangeEnd)) compared with an operand.
public struct Compare: Equatable, Sendable {
    public enum Result: Int, Sendable { case equal = 0, greater, less, notEqual }
    public enum Target: Equatable, Sendable {
        case version(Int64)
        case createRevision(Int64)
        case modRevision(Int64)
        case value([UInt8])
        case lease(Int64)
    }

    public var key: [UInt8]
    public var rangeEnd: [UInt8] = []
    public var target: Target
    public var result: Result

    public init(key: [UInt8], rangeEnd: [UInt8] = [], target: Target, result: Result) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.target = target
        self.result = result
    }
}

public indirect enum RequestOp: Equatable, Sendable {
    case range(RangeRequest)
    case put(PutRequest)
    case deleteRange(DeleteRangeRequest)
    case txn(TxnRequest)
}

public indirect enum ResponseOp: Equatable, Sendable {
    case range(RangeResult)
    case put(PutResult)
    case deleteRange(DeleteRangeResult)
    case txn(TxnResult)
}

public struct TxnRequest: Equatable, Sendable {
    public var compare: [Compare]
    public var success: [RequestOp]
    public var failure: [RequestOp]

    public init(compare: [Compare] = [], success: [RequestOp] = [], failure: [RequestOp] = []) {
        self.compare = compare
        self.success = success
        self.failure = failure
    }
}

public struct TxnResult: Equatable, Sendable {
    public var succeeded: Bool
    public var responses: [ResponseOp]
    public var revision: Int64
}
