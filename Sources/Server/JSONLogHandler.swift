import EtcdStatus
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Logs one JSON object per line to its outputs (standard error unless
/// --log-outputs says otherwise), shaped like etcd's:
/// `{"level":"info","ts":"2026-11-26T08:43:42.123Z","logger":"swetcd","msg":"...","key":"value"}`.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    /// File descriptors each line is written to, whole (one write each).
    private let outputs: [Int32]

    public init(label: String, level: Logger.Level, outputs: [Int32] = [2]) {
        self.label = label
        self.logLevel = level
        self.outputs = outputs
    }

    /// The descriptors for --log-outputs: standard error or output, or
    /// files opened to append. Throws naming a file that cannot be opened.
    public static func open(outputs: [String]) throws -> [Int32] {
        try outputs.map { output in
            switch output {
            case "default", "stderr": return 2
            case "stdout": return 1
            default:
                let fd = Glibc.open(output, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o600)
                guard fd >= 0 else { throw ServerError.unsupported("cannot open log output \(output): \(String(cString: strerror(errno)))") }
                return fd
            }
        }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var fields = metadata
        if let extra = event.metadata { fields.merge(extra) { _, new in new } }
        var out = "{\"level\":\"\(Self.name(event.level))\",\"ts\":\"\(Self.timestamp())\",\"logger\":\(Self.quote(label)),\"msg\":\(Self.quote(event.message.description))"
        for key in fields.keys.sorted() {
            out += ",\(Self.quote(key)):\(Self.quote(fields[key]!.description))"
        }
        out += "}\n"
        var bytes = Array(out.utf8)
        for fd in outputs { _ = bytes.withUnsafeMutableBytes { write(fd, $0.baseAddress, $0.count) } }
    }

    static func name(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: return "debug"
        case .info, .notice: return "info"
        case .warning: return "warn"
        case .error: return "error"
        case .critical: return "fatal"
        }
    }

    /// JSON strings as zap writes them: escaped, but not HTML-safe.
    static func quote(_ s: String) -> String { GoJSONText.quoted(s, htmlSafe: false) }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var t = time_t(ts.tv_sec)
        var parts = tm()
        gmtime_r(&t, &parts)
        var buf = [Int8](repeating: 0, count: 32)
        let n = strftime(&buf, buf.count, "%Y-%m-%dT%H:%M:%S", &parts)
        let ms = ts.tv_nsec / 1_000_000
        let msText = ms < 10 ? "00\(ms)" : (ms < 100 ? "0\(ms)" : "\(ms)")
        return String(decoding: buf[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) + ".\(msText)Z"
    }
}
