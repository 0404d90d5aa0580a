import Metrics
import Transport

/// What the server counts itself for /metrics (the store, WAL, lessor and
/// peer transport count their own), all on the service loop: grpc-go's
/// per-method series as etcd's interceptors label them, and the histograms
/// of work the server times.
final class ServerMetrics {
    /// The counters of one method, made once when it is registered so that
    /// counting a call hashes nothing.
    final class CallKey {
        let type: String
        let service: String
        let method: String
        fileprivate(set) var started = 0
        fileprivate(set) var handled = [Int](repeating: 0, count: ServerMetrics.codeNames.count)
        let messages = GRPCMessageCounts()
        /// grpc-go's `grpc_server_handling_seconds` (--metrics extensive).
        let handlingSeconds: Histogram?

        fileprivate init(type: String, service: String, method: String, timed: Bool) {
            self.type = type
            self.service = service
            self.method = method
            handlingSeconds = timed ? Histogram(bounds: Histogram.defaultBuckets) : nil
        }

        var labels: [(String, String)] { [("grpc_method", method), ("grpc_service", service), ("grpc_type", type)] }
    }
    private var keys: [String: CallKey] = [:]
    /// --metrics extensive: calls are timed.
    let extensive: Bool

    init(extensive: Bool) { self.extensive = extensive }

    /// etcd's `etcd_server_slow_apply_total` (applies over 100 ms).
    var slowApplies = 0
    static let slowApplyNanoseconds: UInt64 = 100_000_000
    /// Events sent to watchers (etcd's `etcd_debugging_mvcc_events_total`).
    var eventsSent = 0
    let defragDurations = Histogram(bounds: Histogram.exponentialBuckets(start: 0.1, factor: 2, count: 13))
    let snapshotDurations = Histogram(bounds: Histogram.exponentialBuckets(start: 0.01, factor: 2, count: 17))

    /// The counters of a method (the same object for the same method).
    func key(type: String, service: String, method: String) -> CallKey {
        let name = "\(type) \(service) \(method)"
        if let k = keys[name] { return k }
        let k = CallKey(type: type, service: service, method: method, timed: extensive)
        keys[name] = k
        return k
    }

    /// A call began: counted, and its messages counted from now on
    /// (`request`: a unary or server-streaming call's one request).
    func callStarted(_ key: CallKey, _ call: GRPCCall, request: [UInt8]?) {
        key.started += 1
        call.messageCounts = key.messages
        if key.handlingSeconds != nil { call.startedNanoseconds = monotonicNanoseconds() }
        if let request { key.messages.received(bytes: request.count) }
    }

    func callHandled(_ key: CallKey, _ call: GRPCCall, code: Int) {
        if code >= 0 && code < key.handled.count { key.handled[code] += 1 }
        if let h = key.handlingSeconds, call.startedNanoseconds > 0 {
            h.observe(nanoseconds: monotonicNanoseconds() - call.startedNanoseconds)
        }
    }

    /// grpc-go's `grpc_type` label.
    static func grpcType(_ kind: GRPCMethodKind) -> String {
        switch kind {
        case .unary: "unary"
        case .serverStreaming: "server_stream"
        case .bidirectionalStreaming: "bidi_stream"
        }
    }

    static let codeNames = ["OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded", "NotFound",
                            "AlreadyExists", "PermissionDenied", "ResourceExhausted", "FailedPrecondition",
                            "Aborted", "OutOfRange", "Unimplemented", "Internal", "Unavailable", "DataLoss",
                            "Unauthenticated"]

    /// grpc-go's per-method series. Every registered method has each
    /// series from the start, and `handled` has every code (as etcd's
    /// `grpc_prometheus.Register` makes them), so that rules over error
    /// codes find series before the first error.
    func writeGRPC(to out: inout Exposition) {
        let sorted = keys.sorted(by: { $0.key < $1.key }).map(\.value)
        out.family("grpc_server_started_total", .counter, help: "Total number of RPCs started on the server.")
        for k in sorted { out.sample("grpc_server_started_total", k.labels, k.started) }
        out.family("grpc_server_handled_total", .counter,
                   help: "Total number of RPCs completed on the server, regardless of success or failure.")
        for k in sorted {
            for (code, n) in k.handled.enumerated() {
                out.sample("grpc_server_handled_total", [("grpc_code", Self.codeNames[code])] + k.labels, n)
            }
        }
        out.family("grpc_server_msg_received_total", .counter, help: "Total number of RPC stream messages received on the server.")
        for k in sorted { out.sample("grpc_server_msg_received_total", k.labels, k.messages.received) }
        out.family("grpc_server_msg_sent_total", .counter, help: "Total number of gRPC stream messages sent by the server.")
        for k in sorted { out.sample("grpc_server_msg_sent_total", k.labels, k.messages.sent) }
        if extensive {
            out.family("grpc_server_handling_seconds", .histogram,
                       help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.")
            for k in sorted { if let h = k.handlingSeconds { out.histogram("grpc_server_handling_seconds", labels: k.labels, h.snapshot) } }
        }
        out.single("etcd_network_client_grpc_received_bytes_total", .counter,
                   help: "The total number of bytes received from grpc clients.",
                   Double(sorted.reduce(0) { $0 + $1.messages.receivedBytes }))
        out.single("etcd_network_client_grpc_sent_bytes_total", .counter,
                   help: "The total number of bytes sent to grpc clients.",
                   Double(sorted.reduce(0) { $0 + $1.messages.sentBytes }))
    }
}
