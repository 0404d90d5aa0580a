import EtcdStatus
import Foundation
import SwiftProtobuf

/// JSON as etcdctl 3.4's `-w json` prints it: Go's encoding/json applied to
/// the gogo-generated structs. Keys are proto field names in field order,
/// every field `omitempty` (zero numbers, false, empty strings, bytes and
/// lists are left out; a message that is set prints even when empty),
/// 64-bit integers as numbers, enums as their numbers, bytes as base64, a
/// oneof as `"Oneof":{"Field":...}` in Go's CamelCase, and strings escaped
/// as Go escapes them (HTML-safe). Fields etcd added after 3.4 are left
/// out, as etcdctl 3.4 (which does not know them) leaves them out.
indirect enum GoJSON {
    case object([(String, GoJSON)])
    case array([GoJSON])
    case string(String)
    case number(String)
    case bool(Bool)
    case null

    /// A protobuf message as Go encodes the struct generated for it.
    init(_ message: some SwiftProtobuf.Message) {
        var visitor = GoJSONVisitor(messageName: type(of: message).protoMessageName)
        try? message.traverse(visitor: &visitor)
        self = .object(visitor.fields.sorted { $0.number < $1.number }.map { ($0.key, $0.value) })
    }

    /// `base64` of bytes, as Go encodes a []byte.
    static func bytes(_ data: some Sequence<UInt8>) -> GoJSON { .string(Data(data).base64EncodedString()) }

    static func number(_ n: some BinaryInteger) -> GoJSON { .number(String(n)) }

    /// Compact text, as json.Marshal writes it.
    var text: String {
        var out = ""
        write(to: &out)
        return out
    }

    func write(to out: inout String) {
        switch self {
        case .object(let fields):
            out += "{"
            for (i, (key, value)) in fields.enumerated() {
                if i > 0 { out += "," }
                Self.quote(key, into: &out)
                out += ":"
                value.write(to: &out)
            }
            out += "}"
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(to: &out)
            }
            out += "]"
        case .string(let s): Self.quote(s, into: &out)
        case .number(let n): out += n
        case .bool(let b): out += b ? "true" : "false"
        case .null: out += "null"
        }
    }

    static func quote(_ s: String, into out: inout String) { GoJSONText.quote(s, into: &out) }

    /// Go's name for a proto name: each `_`-separated part capitalized.
    static func camelCase(_ protoName: String) -> String {
        protoName.split(separator: "_").map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
    }
}

/// Collects a message's set fields (swift-protobuf visits only those, so
/// omitempty comes free) as Go JSON, keyed by proto name.
private struct GoJSONVisitor: SwiftProtobuf.Visitor {
    let names: [Int: ProtoFieldNames.Field]
    var fields: [(number: Int, key: String, value: GoJSON)] = []

    init(messageName: String) {
        names = ProtoFieldNames.byMessage[messageName] ?? [:]
    }

    private mutating func add(_ number: Int, _ value: GoJSON) {
        let field = names[number]
        // etcdctl 3.4 does not know fields added later, so never prints them.
        if field?.since != nil { return }
        let name = field?.name ?? "field\(number)"
        if let oneof = field?.oneof {
            fields.append((number, GoJSON.camelCase(oneof), .object([(GoJSON.camelCase(name), value)])))
        } else {
            fields.append((number, name, value))
        }
    }

    mutating func visitSingularDoubleField(value: Double, fieldNumber: Int) throws { add(fieldNumber, .number("\(value)")) }
    mutating func visitSingularInt64Field(value: Int64, fieldNumber: Int) throws { add(fieldNumber, .number(value)) }
    mutating func visitSingularUInt64Field(value: UInt64, fieldNumber: Int) throws { add(fieldNumber, .number(value)) }
    mutating func visitSingularBoolField(value: Bool, fieldNumber: Int) throws { add(fieldNumber, .bool(value)) }
    mutating func visitSingularStringField(value: String, fieldNumber: Int) throws { add(fieldNumber, .string(value)) }
    mutating func visitSingularBytesField(value: Data, fieldNumber: Int) throws { add(fieldNumber, .bytes(value)) }
    mutating func visitSingularEnumField<E: SwiftProtobuf.Enum>(value: E, fieldNumber: Int) throws {
        add(fieldNumber, .number(value.rawValue))
    }
    mutating func visitSingularMessageField<M: SwiftProtobuf.Message>(value: M, fieldNumber: Int) throws {
        add(fieldNumber, GoJSON(value))
    }
    mutating func visitSingularGroupField<G: SwiftProtobuf.Message>(value: G, fieldNumber: Int) throws {
        add(fieldNumber, GoJSON(value))
    }
    mutating func visitRepeatedInt64Field(value: [Int64], fieldNumber: Int) throws {
        add(fieldNumber, .array(value.map { .number($0) }))
    }
    mutating func visitPackedInt64Field(value: [Int64], fieldNumber: Int) throws {
        add(fieldNumber, .array(value.map { .number($0) }))
    }
    mutating func visitRepeatedStringField(value: [String], fieldNumber: Int) throws {
        add(fieldNumber, .array(value.map { .string($0) }))
    }
    mutating func visitRepeatedBytesField(value: [Data], fieldNumber: Int) throws {
        add(fieldNumber, .array(value.map { .bytes($0) }))
    }
    mutating func visitRepeatedMessageField<M: SwiftProtobuf.Message>(value: [M], fieldNumber: Int) throws {
        add(fieldNumber, .array(value.map { GoJSON($0) }))
    }
    mutating func visitRepeatedEnumField<E: SwiftProtobuf.Enum>(value: [E], fieldNumber: Int) throws {
        add(fieldNumber, .array(value.map { .number($0.rawValue) }))
    }
    mutating func visitPackedEnumField<E: SwiftProtobuf.Enum>(value: [E], fieldNumber: Int) throws {
        add(fieldNumber, .array(value.map { .number($0.rawValue) }))
    }
    mutating func visitMapField<KeyType, ValueType: MapValueType>(
        fieldType: _ProtobufMap<KeyType, ValueType>.Type, value: _ProtobufMap<KeyType, ValueType>.BaseType, fieldNumber: Int
    ) throws {}
    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufEnumMap<KeyType, ValueType>.Type, value: _ProtobufEnumMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws where ValueType.RawValue == Int {}
    mutating func visitMapField<KeyType, ValueType>(
        fieldType: _ProtobufMessageMap<KeyType, ValueType>.Type, value: _ProtobufMessageMap<KeyType, ValueType>.BaseType,
        fieldNumber: Int
    ) throws {}
    mutating func visitUnknown(bytes: Data) throws {}
}
