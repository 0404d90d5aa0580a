/// Prometheus's text exposition format (version 0.0.4), written one
/// metric family at a time: a family's `# HELP` and `# TYPE` lines, then
/// its samples. Numbers are written as client_golang writes them, so that
/// `le` labels read as etcd's do ("0.001", "1", "+Inf").
public struct Exposition {
    public enum Kind: String { case counter, gauge, histogram }

    public private(set) var text = ""
    private var families: Set<String> = []

    public init() {}

    /// Starts a family; every sample written until the next one belongs to it.
    /// A name may head only one family.
    public mutating func family(_ name: String, _ kind: Kind, help: String) {
        precondition(families.insert(name).inserted, "metric family \(name) written twice")
        text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(kind.rawValue)\n"
    }

    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        text += name
        if !labels.isEmpty {
            text += "{"
            for (i, (label, v)) in labels.enumerated() {
                if i > 0 { text += "," }
                text += "\(label)=\"\(Self.escapeLabelValue(v))\""
            }
            text += "}"
        }
        text += " \(Self.number(value))\n"
    }

    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Int) {
        sample(name, labels, Double(value))
    }

    /// A family of one sample.
    public mutating func single(_ name: String, _ kind: Kind, help: String, labels: [(String, String)] = [], _ value: Double) {
        family(name, kind, help: help)
        sample(name, labels, value)
    }

    /// A histogram's `_bucket` (cumulative, with `le`), `_sum` and `_count`
    /// samples, under the family already started.
    public mutating func histogram(_ name: String, labels: [(String, String)] = [], _ h: Histogram.Snapshot) {
        for (i, bound) in h.bounds.enumerated() {
            sample(name + "_bucket", labels + [("le", Self.number(bound))], h.cumulativeCounts[i])
        }
        sample(name + "_bucket", labels + [("le", "+Inf")], h.count)
        sample(name + "_sum", labels, h.sum)
        sample(name + "_count", labels, h.count)
    }

    /// Shortest digits, as client_golang's `'g'` formatting, except that
    /// integers below 10^15 are written in full (Go writes 1e+06): bucket
    /// bounds read exactly as etcd's ("0.001", "1"), and +Inf/-Inf/NaN.
    public static func number(_ v: Double) -> String {
        if v.isNaN { return "NaN" }
        if v.isInfinite { return v > 0 ? "+Inf" : "-Inf" }
        if v == v.rounded() && abs(v) < 1e15 { return String(Int64(v)) }
        return String(v)
    }

    /// HELP text escapes backslashes and newlines; label values quotes too.
    static func escapeHelp(_ s: String) -> String { escape(s, quotes: false) }
    static func escapeLabelValue(_ s: String) -> String { escape(s, quotes: true) }

    private static func escape(_ s: String, quotes: Bool) -> String {
        var out = ""
        for c in s {
            switch c {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\"" where quotes: out += "\\\""
            default: out.append(c)
            }
        }
        return out
    }
}
