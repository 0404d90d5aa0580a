/// One version of a key, as etcd's `mvccpb.KeyValue`. The backend stores
/// exactly the protobuf encoding of this message, so a snapshot of our backend
/// holds the bytes etcd would hold.
public struct KeyValue: Equatable, Sendable {
    public var key: [UInt8]
    public var createRevision: Int64
    public var modRevision: Int64
    public var version: Int64
    public var value: [UInt8]
    public var lease: Int64

    public init(key: [UInt8], createRevision: Int64 = 0, modRevision: Int64 = 0,
                version: Int64 = 0, value: [UInt8] = [], lease: Int64 = 0) {
        self.key = key
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.value = value
        self.lease = lease
    }
}

/// The protobuf wire format of `mvccpb.KeyValue`, written by hand so the
/// storage path needs neither Foundation `Data` nor the protobuf runtime. A
/// test checks it byte for byte against swift-protobuf's encoding.
extension KeyValue {
    private enum Tag {
        static let key: UInt8 = 1 << 3 | 2
        static let createRevision: UInt8 = 2 << 3 | 0
        static let modRevision: UInt8 = 3 << 3 | 0
        static let version: UInt8 = 4 << 3 | 0
        static let value: UInt8 = 5 << 3 | 2
        static let lease: UInt8 = 6 << 3 | 0
    }

    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(key.count + value.count + 40)
        encode(into: &out)
        return out
    }

    public func encode(into out: inout [UInt8]) {
        if !key.isEmpty { Self.putBytes(Tag.key, key, &out) }
        if createRevision != 0 { Self.putVarint(Tag.createRevision, createRevision, &out) }
        if modRevision != 0 { Self.putVarint(Tag.modRevision, modRevision, &out) }
        if version != 0 { Self.putVarint(Tag.version, version, &out) }
        if !value.isEmpty { Self.putBytes(Tag.value, value, &out) }
        if lease != 0 { Self.putVarint(Tag.lease, lease, &out) }
    }

    private static func putBytes(_ tag: UInt8, _ bytes: [UInt8], _ out: inout [UInt8]) {
        out.append(tag)
        appendVarint(UInt64(bytes.count), &out)
        out.append(contentsOf: bytes)
    }

    private static func putVarint(_ tag: UInt8, _ v: Int64, _ out: inout [UInt8]) {
        out.append(tag)
        appendVarint(UInt64(bitPattern: v), &out)
    }

    /// Protobuf's base-128 varint (the snapshot code writes etcd's other
    /// messages with it too).
    public static func appendVarint(_ value: UInt64, _ out: inout [UInt8]) {
        var v = value
        while v >= 0x80 {
            out.append(UInt8(truncatingIfNeeded: v) | 0x80)
            v >>= 7
        }
        out.append(UInt8(v))
    }

    /// Decodes the protobuf bytes of a `mvccpb.KeyValue`. Unknown fields are
    /// skipped; malformed input yields nil.
    public init?(encoded buf: UnsafeRawBufferPointer, skipValue: Bool = false) {
        self.init(key: [])
        var reader = ProtoReader(buf)
        while !reader.isAtEnd {
            guard let tag = reader.varint() else { return nil }
            let field = tag >> 3, wireType = tag & 7
            switch (field, wireType) {
            case (1, 2):
                guard let b = reader.lengthDelimited() else { return nil }
                key = Array(b)
            case (5, 2):
                guard let b = reader.lengthDelimited() else { return nil }
                if !skipValue { value = Array(b) }
            case (2, 0), (3, 0), (4, 0), (6, 0):
                guard let raw = reader.varint() else { return nil }
                let v = Int64(bitPattern: raw)
                switch field {
                case 2: createRevision = v
                case 3: modRevision = v
                case 4: version = v
                default: lease = v
                }
            default:
                guard reader.skip(wireType: wireType) else { return nil }
            }
        }
    }

    public init?(encoded bytes: [UInt8]) {
        guard let kv = bytes.withUnsafeBytes({ KeyValue(encoded: $0) }) else { return nil }
        self = kv
    }
}

/// A bounds-checked cursor over protobuf bytes.
struct ProtoReader {
    private let buf: UnsafeRawBufferPointer
    private var offset = 0

    init(_ buf: UnsafeRawBufferPointer) { self.buf = buf }

    var isAtEnd: Bool { offset >= buf.count }

    mutating func varint() -> UInt64? {
        var result: UInt64 = 0
        var shift: UInt64 = 0
        while offset < buf.count && shift < 64 {
            let byte = buf[offset]
            offset += 1
            result |= UInt64(byte & 0x7f) << shift
            if byte & 0x80 == 0 { return result }
            shift += 7
        }
        return nil
    }

    mutating func lengthDelimited() -> UnsafeRawBufferPointer.SubSequence? {
        guard let n = varint(), n <= UInt64(buf.count - offset) else { return nil }
        let start = offset
        offset += Int(n)
        return buf[start..<offset]
    }

    mutating func skip(wireType: UInt64) -> Bool {
        switch wireType {
        case 0: return varint() != nil
        case 1: return advance(8)
        case 2: return lengthDelimited() != nil
        case 5: return advance(4)
        default: return false
        }
    }

    private mutating func advance(_ n: Int) -> Bool {
        guard buf.count - offset >= n else { return false }
        offset += n
        return true
    }
}
