import Transport
import V2Store

/// A `/v2/keys` request's parameters, read and checked as etcd's
/// parseKeyRequest does (same order, codes and causes): the query and, for
/// a form-encoded body, the body (its values first, as Go's ParseForm).
struct V2KeyRequest {
    var method: String
    var path: String
    var value = ""
    var dir = false, recursive = false, sorted = false, wait = false, stream = false, noValueOnSuccess = false
    var prevValue = ""
    var prevIndex: UInt64 = 0, waitIndex: UInt64 = 0
    var prevExist: Bool?
    var refresh = false
    var ttl: UInt64?

    init(_ request: HTTP1Request) throws(V2Error) {
        method = request.method
        var form: [String: [String]] = [:]
        func add(_ encoded: Substring) throws(V2Error) {
            for pair in encoded.split(separator: "&", omittingEmptySubsequences: true) {
                let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = try Self.unescape(parts[0], plusIsSpace: true)
                let value = parts.count > 1 ? try Self.unescape(parts[1], plusIsSpace: true) : ""
                form[name, default: []].append(value)
            }
        }
        let contentType = request.header("content-type")?.lowercased() ?? ""
        if ["PUT", "POST", "PATCH"].contains(request.method) && contentType.hasPrefix("application/x-www-form-urlencoded") {
            try add(Substring(decoding: request.body, as: UTF8.self))
        }
        if let q = request.target.firstIndex(of: "?") { try add(request.target[request.target.index(after: q)...]) }
        path = try Self.unescape(Substring(request.path.dropFirst("/v2/keys".count)), plusIsSpace: false)

        func first(_ name: String) -> String? { form[name]?.first }
        func uint(_ name: String) throws(V2Error) -> UInt64 {
            guard let s = first(name) else { return 0 }
            guard let v = UInt64(s) else { throw V2Error(.indexNaN, "invalid value for \"\(name)\"", 0) }
            return v
        }
        func bool(_ name: String, cause: String? = nil) throws(V2Error) -> Bool {
            guard let s = first(name) else { return false }
            guard let v = Self.goBool(s) else { throw V2Error(.invalidField, cause ?? "invalid value for \"\(name)\"", 0) }
            return v
        }
        prevIndex = try uint("prevIndex")
        waitIndex = try uint("waitIndex")
        recursive = try bool("recursive")
        sorted = try bool("sorted")
        wait = try bool("wait")
        dir = try bool("dir")
        _ = try bool("quorum")
        stream = try bool("stream")
        if wait && method != "GET" && method != "HEAD" {
            throw V2Error(.invalidField, "\"wait\" can only be used with GET requests", 0)
        }
        prevValue = first("prevValue") ?? ""
        if form["prevValue"] != nil && prevValue.isEmpty {
            throw V2Error(.prevValueRequired, "\"prevValue\" cannot be empty", 0)
        }
        noValueOnSuccess = try bool("noValueOnSuccess")
        if let t = first("ttl"), !t.isEmpty {
            guard let v = UInt64(t) else { throw V2Error(.ttlNaN, "invalid value for \"ttl\"", 0) }
            ttl = v
        }
        if form["prevExist"] != nil { prevExist = try bool("prevExist", cause: "invalid value for prevExist") }
        if form["refresh"] != nil {
            refresh = try bool("refresh", cause: "invalid value for refresh")
            if refresh {
                if !(first("value") ?? "").isEmpty { throw V2Error(.refreshValue, "A value was provided on a refresh", 0) }
                if ttl == nil { throw V2Error(.refreshTTLRequired, "No TTL value set", 0) }
            }
        }
        value = first("value") ?? ""
    }

    /// The change to log, with its expiry time from the clock now.
    func request(now: UInt64) -> V2Request {
        var r = V2Request(method: method == "POST" ? .post : method == "DELETE" ? .delete : .put, path: path)
        r.value = value
        r.dir = dir
        r.prevExist = prevExist
        r.prevValue = prevValue
        r.prevIndex = prevIndex
        r.recursive = recursive
        r.refresh = refresh
        r.expiresAt = ttl.map { Self.expiry(now: now, ttl: $0) }
        r.now = now
        return r
    }

    /// The last millisecond of year 9999, beyond which Go cannot write a
    /// time as JSON: a longer TTL expires then.
    static let latestExpiry: UInt64 = 253_402_300_799_999

    /// `now` plus `ttl` seconds, in milliseconds, no later than `latestExpiry`.
    static func expiry(now: UInt64, ttl: UInt64) -> UInt64 {
        let (ms, overflow) = ttl.multipliedReportingOverflow(by: 1000)
        if overflow || ms > latestExpiry { return latestExpiry }
        return min(now + ms, latestExpiry)
    }

    /// Go's strconv.ParseBool.
    static func goBool(_ s: String) -> Bool? {
        switch s {
        case "1", "t", "T", "TRUE", "true", "True": return true
        case "0", "f", "F", "FALSE", "false", "False": return false
        default: return nil
        }
    }

    /// Percent-decoding as Go's url.QueryUnescape (or PathUnescape without
    /// `plusIsSpace`), with its error for a bad escape.
    static func unescape(_ s: Substring, plusIsSpace: Bool) throws(V2Error) -> String {
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            switch b[i] {
            case UInt8(ascii: "%"):
                guard i + 2 < b.count, let hi = hexValue(b[i + 1]), let lo = hexValue(b[i + 2]) else {
                    let bad = String(decoding: b[i..<min(i + 3, b.count)], as: UTF8.self)
                    throw V2Error(.invalidForm, "invalid URL escape \"\(bad)\"", 0)
                }
                out.append(hi << 4 | lo)
                i += 3
            case UInt8(ascii: "+") where plusIsSpace:
                out.append(UInt8(ascii: " "))
                i += 1
            default:
                out.append(b[i])
                i += 1
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
