/// gRPC status codes (grpc/grpc `doc/statuscodes.md`). Every module's error
/// type maps each of its cases to one of these plus etcd's exact message.
public enum GRPCStatusCode: Int, Sendable, CaseIterable {
    case ok = 0
    case canceled = 1
    case unknown = 2
    case invalidArgument = 3
    case deadlineExceeded = 4
    case notFound = 5
    case alreadyExists = 6
    case permissionDenied = 7
    case resourceExhausted = 8
    case failedPrecondition = 9
    case aborted = 10
    case outOfRange = 11
    case unimplemented = 12
    case `internal` = 13
    case unavailable = 14
    case dataLoss = 15
    case unauthenticated = 16

    /// The name Go's gRPC prints ("PermissionDenied"): etcd puts the text
    /// of a Go error, `rpc error: code = NAME desc = MESSAGE`, into some
    /// fields (a refused watch's cancel_reason).
    public var goName: String {
        switch self {
        case .ok: return "OK"
        case .canceled: return "Canceled"
        case .unknown: return "Unknown"
        case .invalidArgument: return "InvalidArgument"
        case .deadlineExceeded: return "DeadlineExceeded"
        case .notFound: return "NotFound"
        case .alreadyExists: return "AlreadyExists"
        case .permissionDenied: return "PermissionDenied"
        case .resourceExhausted: return "ResourceExhausted"
        case .failedPrecondition: return "FailedPrecondition"
        case .aborted: return "Aborted"
        case .outOfRange: return "OutOfRange"
        case .unimplemented: return "Unimplemented"
        case .internal: return "Internal"
        case .unavailable: return "Unavailable"
        case .dataLoss: return "DataLoss"
        case .unauthenticated: return "Unauthenticated"
        }
    }
}

extension EtcdStatusError {
    /// The error as Go's gRPC prints it.
    public var goErrorText: String { "rpc error: code = \(grpcCode.goName) desc = \(grpcMessage)" }
}

/// An error a client sees as a gRPC status: the code and the message text that
/// etcd clients match on byte for byte.
public protocol EtcdStatusError: Error {
    var grpcCode: GRPCStatusCode { get }
    var grpcMessage: String { get }
}

/// JSON strings as Go's encoding/json writes them (HTML-safe: <, >, &
/// escaped, as are U+2028 and U+2029), for output that must match etcd's
/// byte for byte (etcdctl's -w json, the gateway's error bodies).
public enum GoJSONText {
    /// `htmlSafe` (encoding/json's default) escapes <, >, & and the line
    /// separators too; zap's logs do not.
    public static func quote(_ s: String, into out: inout String, htmlSafe: Bool = true) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<" where htmlSafe, ">" where htmlSafe, "&" where htmlSafe, "\u{2028}" where htmlSafe, "\u{2029}" where htmlSafe:
                out += hexEscape(scalar.value)
            default:
                if scalar.value < 0x20 { out += hexEscape(scalar.value) } else { out.unicodeScalars.append(scalar) }
            }
        }
        out += "\""
    }

    /// `s` as a quoted JSON string.
    public static func quoted(_ s: String, htmlSafe: Bool = true) -> String {
        var out = ""
        quote(s, into: &out, htmlSafe: htmlSafe)
        return out
    }

    private static func hexEscape(_ v: UInt32) -> String {
        let hex = String(v, radix: 16)
        return "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
    }
}
