/// Counters exported at /metrics in the Prometheus text format, named as
/// etcd's where etcd has the same metric.
final class Metrics {
    /// The counters of one method, made once when it is registered so that
    /// counting a call hashes nothing.
    final class CallKey {
        let type: String
        let service: String
        let method: String
        fileprivate(set) var started = 0
        fileprivate(set) var handled: [Int: Int] = [:]  // by grpc code

        fileprivate init(type: String, service: String, method: String) {
            self.type = type
            self.service = service
            self.method = method
        }
    }
    private var keys: [String: CallKey] = [:]

    /// The counters of a method (the same object for the same method).
    func key(type: String, service: String, method: String) -> CallKey {
        let name = "\(type) \(service) \(method)"
        if let k = keys[name] { return k }
        let k = CallKey(type: type, service: service, method: method)
        keys[name] = k
        return k
    }

    func callStarted(_ key: CallKey) { key.started += 1 }
    func callHandled(_ key: CallKey, code: Int) { key.handled[code, default: 0] += 1 }

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
        let sorted = keys.sorted(by: { $0.key < $1.key }).map(\.value)
        for k in sorted where k.started > 0 {
            out += "grpc_server_started_total{\(labels(k))} \(k.started)\n"
        }
        out += "# HELP grpc_server_handled_total Total number of RPCs completed on the server, regardless of success or failure.\n"
        out += "# TYPE grpc_server_handled_total counter\n"
        for k in sorted {
            for (code, n) in k.handled.sorted(by: { $0.key < $1.key }) {
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
