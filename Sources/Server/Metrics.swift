/// Counters exported at /metrics in the Prometheus text format, named as
/// etcd's where etcd has the same metric.
final class Metrics {
    struct CallKey: Hashable {
        var type: String
        var service: String
        var method: String
    }
    private(set) var started: [CallKey: Int] = [:]
    private(set) var handled: [CallKey: [Int: Int]] = [:]  // by grpc code

    static func split(_ path: String) -> (service: String, method: String) {
        let parts = path.split(separator: "/")
        return parts.count == 2 ? (String(parts[0]), String(parts[1])) : ("unknown", path)
    }

    func callStarted(_ key: CallKey) { started[key, default: 0] += 1 }
    func callHandled(_ key: CallKey, code: Int) { handled[key, default: [:]][code, default: 0] += 1 }

    static let codeNames = ["OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
                            "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
                            "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
                            "Unauthenticated"]

    /// The exposition text; `gauges` are (name, help, value) read at scrape.
    func render(gauges: [(String, String, Double)]) -> String {
        var out = ""
        for (name, help, value) in gauges {
            out += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n\(name) \(Self.number(value))\n"
        }
        func labels(_ k: CallKey) -> String {
            "grpc_method=\"\(k.method)\",grpc_service=\"\(k.service)\",grpc_type=\"\(k.type)\""
        }
        out += "# HELP grpc_server_started_total Total number of RPCs started on the server.\n"
        out += "# TYPE grpc_server_started_total counter\n"
        for (k, n) in started.sorted(by: { "\($0.key)" < "\($1.key)" }) {
            out += "grpc_server_started_total{\(labels(k))} \(n)\n"
        }
        out += "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n"
        out += "# TYPE grpc_server_handled_total counter\n"
        for (k, codes) in handled.sorted(by: { "\($0.key)" < "\($1.key)" }) {
            for (code, n) in codes.sorted(by: { $0.key < $1.key }) {
                let name = code < Self.codeNames.count ? Self.codeNames[code] : String(code)
                out += "grpc_server_handled_total{grpc_code=\"\(name)\",\(labels(k))} \(n)\n"
            }
        }
        return out
    }

    static func number(_ v: Double) -> String {
        v == v.rounded() && abs(v) < 1e15 ? String(Int64(v)) : String(v)
    }
}
