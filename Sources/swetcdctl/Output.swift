import EtcdProto
import Foundation
import SwiftProtobuf

/// Prints results as etcdctl 3.4 does: `-w simple` (its own texts), `-w
/// json` (the response as Go's encoding/json writes it) and `-w fields`
/// (`"Name" : value` lines); `-w table` only where etcdctl has tables.
struct Output {
    enum Format: String { case simple, json, fields, table, protobuf }
    let format: Format
    let hex: Bool
    var valueOnly = false

    init(_ global: GlobalOptions) throws {
        guard let f = Format(rawValue: global.format) else { throw CtlError(.badFeature, "unsupported output format") }
        format = f
        hex = global.isHex
    }

    /// etcdctl's error for a format a command has no printer for.
    func unsupported() -> CtlError { CtlError(.badFeature, "\(format.rawValue) not supported as output format") }

    /// Refuses table and protobuf (which only some commands print).
    func requireListing() throws {
        if format == .table || format == .protobuf { throw unsupported() }
    }

    func json(_ message: some SwiftProtobuf.Message) { print(GoJSON(message).text) }
    func json(_ value: GoJSON) { print(value.text) }

    /// A byte string as etcdctl prints it: as is, or `\x66\x6f` with --hex.
    func text(_ bytes: Data) -> String {
        if hex { return bytes.map { "\\x" + String(format: "%02x", $0) }.joined() }
        return String(decoding: bytes, as: UTF8.self)
    }

    // MARK: KV

    /// etcdctl's printKV: the key (unless value-only), then the value.
    func kv(_ kv: Mvccpb_KeyValue) {
        if !valueOnly { print(text(kv.key)) }
        print(text(kv.value))
    }

    func fieldsKV(_ prefix: String, _ kv: Mvccpb_KeyValue) {
        print("\"\(prefix)Key\" : \(goQuote(kv.key))")
        print("\"\(prefix)CreateRevision\" : \(kv.createRevision)")
        print("\"\(prefix)ModRevision\" : \(kv.modRevision)")
        print("\"\(prefix)Version\" : \(kv.version)")
        print("\"\(prefix)Value\" : \(goQuote(kv.value))")
        print("\"\(prefix)Lease\" : \(kv.lease)")
    }

    func fieldsHeader(_ h: Etcdserverpb_ResponseHeader) { swetcdctl.fieldsHeader(h) }

    func get(_ r: Etcdserverpb_RangeResponse) throws {
        switch format {
        case .json: json(r)
        case .fields:
            fieldsHeader(r.header)
            for k in r.kvs { fieldsKV("", k) }
            print("\"More\" : \(r.more)")
            print("\"Count\" : \(r.count)")
        case .simple: for k in r.kvs { kv(k) }
        default: throw unsupported()
        }
    }

    func put(_ r: Etcdserverpb_PutResponse) throws {
        switch format {
        case .json: json(r)
        case .fields:
            fieldsHeader(r.header)
            if r.hasPrevKv { fieldsKV("Prev", r.prevKv) }
        case .simple:
            print("OK")
            if r.hasPrevKv { kv(r.prevKv) }
        default: throw unsupported()
        }
    }

    func delete(_ r: Etcdserverpb_DeleteRangeResponse) throws {
        switch format {
        case .json: json(r)
        case .fields:
            fieldsHeader(r.header)
            print("\"Deleted\" : \(r.deleted)")
            for k in r.prevKvs { fieldsKV("Prev", k) }
        case .simple:
            print(r.deleted)
            for k in r.prevKvs { kv(k) }
        default: throw unsupported()
        }
    }

    func txn(_ r: Etcdserverpb_TxnResponse) throws {
        switch format {
        case .json: json(r)
        case .fields:
            fieldsHeader(r.header)
            print("\"Succeeded\" : \(r.succeeded)")
            for op in r.responses {
                switch op.response {
                case .responseRange(let g): try get(g)
                case .responsePut(let p): try put(p)
                case .responseDeleteRange(let d): try delete(d)
                default: print("\"Unknown\" : \"\"")
                }
            }
        case .simple:
            print(r.succeeded ? "SUCCESS" : "FAILURE")
            for op in r.responses {
                print("")
                switch op.response {
                case .responseRange(let g): try get(g)
                case .responsePut(let p): try put(p)
                case .responseDeleteRange(let d): try delete(d)
                default: print("unexpected response \(op)")
                }
            }
        default: throw unsupported()
        }
    }
}

/// etcdctl's fields form of a response header.
func fieldsHeader(_ h: Etcdserverpb_ResponseHeader) {
    print("\"ClusterID\" : \(h.clusterID)")
    print("\"MemberID\" : \(h.memberID)")
    print("\"Revision\" : \(h.revision)")
    print("\"RaftTerm\" : \(h.raftTerm)")
}

/// Go's %q of a byte string (strconv.Quote): printable ASCII and valid
/// UTF-8 as they are, the usual backslash escapes, `\x` for other bytes.
func goQuote(_ bytes: Data) -> String {
    var out = "\""
    var i = bytes.startIndex
    while i < bytes.endIndex {
        let b = bytes[i]
        switch b {
        case 0x22: out += "\\\""
        case 0x5c: out += "\\\\"
        case 0x07: out += "\\a"
        case 0x08: out += "\\b"
        case 0x0c: out += "\\f"
        case 0x0a: out += "\\n"
        case 0x0d: out += "\\r"
        case 0x09: out += "\\t"
        case 0x0b: out += "\\v"
        case 0x20..<0x7f: out.unicodeScalars.append(Unicode.Scalar(b))
        case 0x80...:
            // A whole UTF-8 sequence prints as is; a stray byte as \x.
            let length = b >= 0xf0 ? 4 : b >= 0xe0 ? 3 : b >= 0xc0 ? 2 : 1
            let end = bytes.index(i, offsetBy: length, limitedBy: bytes.endIndex) ?? bytes.endIndex
            if length > 1, let s = String(bytes: bytes[i..<end], encoding: .utf8), s.unicodeScalars.count == 1 {
                out += s
                i = end
                continue
            }
            out += String(format: "\\x%02x", b)
        default: out += String(format: "\\x%02x", b)
        }
        i += 1
    }
    return out + "\""
}

func goQuote(_ s: String) -> String { goQuote(Data(s.utf8)) }
