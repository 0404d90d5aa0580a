import EtcdStatus
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Logs one JSON object per line on standard error, shaped like etcd's:
/// `{"level":"info","ts":"2026-11-26T08:43:42.123Z","logger":"swetcd","msg":"...","key":"value"}`.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String

    public init(label: String, level: Logger.Level) {
        self.label = label
        self.logLevel = level
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
        _ = bytes.withUnsafeMutableBytes { write(2, $0.baseAddress, $0.count) }
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
