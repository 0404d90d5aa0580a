import COpenSSL
import EtcdStatus
import MVCC
import Transport
import V2Store
#if canImport(Glibc)
import Glibc
#endif

/// etcd's v2 API behind `--enable-v2`: `/v2/keys` over the `V2Store`, and
/// `/v2/members`, `/v2/machines`, `/v2/stats/...` for one member.
///
/// Changes go through the log like v3 writes (a `.v2` entry carrying the
/// request with its times, so a replay repeats it), are applied to the
/// store in memory, and the nodes they touched are written to the
/// backend's `v2` table in the same transaction as the consistent index.
/// Reads and watches are served from memory. The answers are etcd's: the
/// JSON of its events and errors, `X-Etcd-Index`, `X-Raft-Index`,
/// `X-Raft-Term`, 201 for a creation.
extension EtcdServer {
    // MARK: Storage

    /// Loads the v2 store from the backend (before the WAL replay).
    func loadV2() throws {
        let index = try backend.meta(.v2Index).flatMap(bigEndianUInt64) ?? 0
        var nodes: [V2Store.Node] = []
        try backend.forEachV2 { bytes in
            guard let n = V2Store.Node(encoded: bytes) else {
                throw ServerError.dataDir(config.dataDir, "an undecodable v2 node in the backend")
            }
            nodes.append(n)
        }
        backend.endRead()
        v2Store = V2Store(restoring: nodes, index: index)
    }

    /// Writes what the last change touched, and the index.
    private func persistV2() throws {
        let touched = v2Store.takeTouched()
        guard !touched.isEmpty else { return }
        for (path, node) in touched {
            let key = Self.v2Key(path)
            if let node { try backend.putV2(key, node.encoded()) } else { try backend.deleteV2(key) }
        }
        try backend.setMeta(.v2Index, bigEndianBytes(v2Store.index))
    }

    /// A node's backend key: its path, or for a path too long for an LMDB
    /// key (511 bytes), its first 400 bytes, a zero byte and the SHA-256 of
    /// the whole path (the node's value holds the path itself).
    static func v2Key(_ path: String) -> [UInt8] {
        let bytes = Array(path.utf8)
        if bytes.count <= 440 { return bytes }
        var digest = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeBufferPointer { _ = SHA256($0.baseAddress, $0.count, &digest) }
        return Array(bytes[..<400]) + [0] + digest
    }

    // MARK: Apply

    /// Applies a logged v2 change; the "response" is the v2 answer in an
    /// envelope the HTTP side opens (`V2Answer`).
    func applyV2(_ r: V2Request) -> Result<GRPCMessageBuffer, GRPCStatus> {
        let raftIndex = appliedIndex + 1
        let answer: V2Answer
        do throws(V2Error) {
            let events = try v2Store.apply(r)
            v2Stats.count(r, failed: false)
            notifyV2Watches(events)
            if let e = events.first, r.method != .expire {
                let created = e.action == "create" || (e.action == "set" && e.prevNode == nil)
                answer = V2Answer(status: created ? 201 : 200, etcdIndex: e.index, raftIndex: raftIndex,
                                  body: Array(v2EventJSON(e, now: Self.wallClockMilliseconds()).utf8))
            } else {
                v2Stats.expireCount += events.count
                answer = V2Answer(status: 200, etcdIndex: v2Store.index, raftIndex: raftIndex, body: [])
            }
        } catch {
            v2Stats.count(r, failed: true)
            answer = V2Answer(error)
        }
        do {
            try persistV2()
        } catch {
            refuseWrites(because: "the backend failed storing a v2 change: \(error)")
            return .failure(writesRefused!)
        }
        return .success(GRPCMessageBuffer(copying: answer.encoded()))
    }

    // MARK: Expiry

    /// Proposes the removal of what has expired (the log carries the time,
    /// so a replay removes the same nodes). One proposal at a time.
    func v2ExpiryTick() {
        guard !v2ExpiryProposed, member.isLeader, let due = v2Store.nextExpiry else { return }
        let now = Self.wallClockMilliseconds()
        guard due <= now else { return }
        var r = V2Request(method: .expire, path: "/")
        r.now = now
        v2ExpiryProposed = true
        propose(.v2, r.encoded(), .v2(r)) { [unowned self] _ in v2ExpiryProposed = false }
    }

    static func wallClockMilliseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }

    // MARK: HTTP

    /// Serves a `/v2/...` request when the v2 API is on; false otherwise
    /// (etcd 3.4 without `--enable-v2` answers 404 to every v2 path).
    func serveV2(_ request: HTTP1Request, _ exchange: HTTP1Exchange) -> Bool {
        guard config.enableV2 else { return false }
        let path = request.path
        if path == "/v2/keys" || path.hasPrefix("/v2/keys/") {
            serveV2Keys(request, exchange)
        } else if path == "/v2/members" || path.hasPrefix("/v2/members/") {
            exchange.respond(v2Members(request))
        } else if path == "/v2/machines" {
            guard request.method == "GET" || request.method == "HEAD" else { exchange.respond(Self.v2MethodNotAllowed("GET, HEAD")); return true }
            exchange.respond(HTTP1Response(text: clientURLStrings.joined(separator: ", ")))
        } else if path.hasPrefix("/v2/stats/") {
            exchange.respond(v2StatsResponse(request))
        } else {
            return false
        }
        return true
    }

    private var clientURLStrings: [String] { selfMember.clientUrls }

    private var v2CommonHeaders: [(name: String, value: String)] { [("X-Etcd-Cluster-Id", hex(clusterID))] }

    static func v2MethodNotAllowed(_ allowed: String) -> HTTP1Response {
        var r = HTTP1Response(status: 405, text: "Method Not Allowed\n")
        r.headers = [("Allow", allowed)]
        return r
    }

    private func v2Error(_ e: V2Error) -> HTTP1Response {
        var r = HTTP1Response(status: e.httpStatus, contentType: "application/json", body: Array(Self.v2ErrorJSON(e).utf8))
        r.headers = v2CommonHeaders + [("X-Etcd-Index", "\(e.index)")]
        return r
    }

    private func serveV2Keys(_ request: HTTP1Request, _ exchange: HTTP1Exchange) {
        guard ["GET", "HEAD", "PUT", "POST", "DELETE"].contains(request.method) else {
            exchange.respond(Self.v2MethodNotAllowed("GET, HEAD, PUT, POST, DELETE"))
            return
        }
        // A path Go cannot unescape fails before any handler (plain 400).
        if (try? V2KeyRequest.unescape(Substring(request.path), plusIsSpace: false)) == nil {
            exchange.respond(HTTP1Response(status: 400, text: "400 Bad Request"))
            return
        }
        let parsed: V2KeyRequest
        do {
            parsed = try V2KeyRequest(request)
        } catch {
            exchange.respond(v2Error(error))
            return
        }
        switch request.method {
        case "GET", "HEAD":
            if parsed.wait {
                serveV2Watch(parsed, exchange)
            } else {
                serveV2Get(parsed, exchange, head: request.method == "HEAD")
            }
        default:
            let r = parsed.request(now: Self.wallClockMilliseconds())
            propose(.v2, r.encoded(), .v2(r)) { [unowned self] result in
                switch result {
                case .success(let buffer):
                    guard let answer = V2Answer(encoded: buffer.message) else {
                        exchange.respond(v2Error(V2Error(.raftInternal, "an unreadable v2 answer", 0)))
                        return
                    }
                    var body = answer.body
                    if parsed.noValueOnSuccess && answer.status < 300 && ["PUT", "POST"].contains(request.method) {
                        body = Self.withoutNodes(body)
                    }
                    var response = HTTP1Response(status: answer.status, contentType: "application/json", body: body)
                    response.headers = v2CommonHeaders + [("X-Etcd-Index", "\(answer.etcdIndex)")]
                    if answer.status < 300 {
                        response.headers += [("X-Raft-Index", "\(answer.raftIndex)"), ("X-Raft-Term", "\(member.term)")]
                    }
                    exchange.respond(response)
                case .failure(let status):
                    exchange.respond(v2Error(V2Error(.raftInternal, status.message, 0)))
                }
            }
        }
    }

    /// noValueOnSuccess: the event without its nodes, `{"action":...}`.
    private static func withoutNodes(_ body: [UInt8]) -> [UInt8] {
        let text = String(decoding: body, as: UTF8.self)
        guard let comma = text.firstIndex(of: ",") else { return body }
        return Array((text[..<comma] + "}\n").utf8)
    }

    private func serveV2Get(_ r: V2KeyRequest, _ exchange: HTTP1Exchange, head: Bool) {
        do throws(V2Error) {
            let node = try v2Store.get(r.path)
            v2Stats.getsSuccess += 1
            let now = Self.wallClockMilliseconds()
            let json = "{\"action\":\"get\",\"node\":" + v2NodeJSON(node, now: now, listing: true, recursive: r.recursive,
                                                                      sorted: r.sorted) + "}\n"
            var response = HTTP1Response(contentType: "application/json", body: head ? [] : Array(json.utf8))
            response.headers = v2CommonHeaders + [("X-Etcd-Index", "\(v2Store.index)"), ("X-Raft-Index", "\(appliedIndex)"),
                                                  ("X-Raft-Term", "\(member.term)")]
            exchange.respond(response)
        } catch {
            v2Stats.getsFail += 1
            exchange.respond(v2Error(error))
        }
    }

    /// `GET ?wait=true`: the first change at or after `waitIndex` (or the
    /// next one) under the path; with `stream=true`, every change after it.
    /// The headers go out at once, as etcd flushes them for long polls.
    private func serveV2Watch(_ r: V2KeyRequest, _ exchange: HTTP1Exchange) {
        let watch = V2Watch(path: V2Store.clean(r.path), recursive: r.recursive, stream: r.stream,
                            since: r.waitIndex == 0 ? v2Store.index + 1 : r.waitIndex, exchange: exchange)
        let first: V2Store.Event?
        do throws(V2Error) {
            first = try v2Store.firstChange(watch.path, recursive: watch.recursive, sinceIndex: watch.since)
        } catch {
            exchange.respond(v2Error(error))
            return
        }
        exchange.startStream(status: 200, contentType: "application/json",
                             headers: v2CommonHeaders + [("X-Etcd-Index", "\(v2Store.index)"),
                                                         ("X-Raft-Index", "\(appliedIndex)"), ("X-Raft-Term", "\(member.term)")])
        var next = first
        while let e = next {
            deliver(e, to: watch)
            if watch.done { return }
            next = try? v2Store.firstChange(watch.path, recursive: watch.recursive, sinceIndex: watch.since)
        }
        v2Watches.append(watch)
        v2Stats.watchers = v2Watches.count
        exchange.onClose = { [unowned self, weak watch] in
            watch?.done = true
            v2Watches.removeAll { $0.done }
            v2Stats.watchers = v2Watches.count
        }
    }

    private func deliver(_ e: V2Store.Event, to watch: V2Watch) {
        watch.exchange.send(Array(v2EventJSON(e, now: Self.wallClockMilliseconds()).utf8))
        watch.since = e.index + 1
        // A long poll ends with its event; a stream ends when its reader
        // has fallen far behind (etcd drops such a watcher too).
        if !watch.stream || watch.exchange.queuedBytes > 4 << 20 {
            watch.done = true
            watch.exchange.end()
        }
    }

    private func notifyV2Watches(_ events: [V2Store.Event]) {
        guard !v2Watches.isEmpty else { return }
        for e in events {
            for w in v2Watches where !w.done && e.index >= w.since && V2Store.matches(e, w.path, recursive: w.recursive) {
                deliver(e, to: w)
            }
        }
        v2Watches.removeAll { $0.done || $0.exchange.isClosed }
        v2Stats.watchers = v2Watches.count
    }

    // MARK: JSON

    /// An event as etcd's v2 API writes it (with the newline of Go's
    /// json.Encoder).
    func v2EventJSON(_ e: V2Store.Event, now: UInt64) -> String {
        var s = "{\"action\":\"\(e.action)\",\"node\":" + v2NodeJSON(e.node, now: now, listing: false, recursive: false, sorted: false)
        if let p = e.prevNode { s += ",\"prevNode\":" + v2NodeJSON(p, now: now, listing: false, recursive: false, sorted: false) }
        return s + "}\n"
    }

    /// A node as etcd's NodeExtern: key (none for the root), value for a
    /// value, dir, expiration and ttl, the children of a directory that is
    /// listed (one level, or all with `recursive`; hidden names left out),
    /// the indexes (none when 0).
    func v2NodeJSON(_ n: V2Store.Node, now: UInt64, listing: Bool, recursive: Bool, sorted: Bool) -> String {
        var fields: [String] = []
        if n.key != "/" { fields.append("\"key\":" + GoJSONText.quoted(n.key)) }
        if let v = n.value, !n.isDir { fields.append("\"value\":" + GoJSONText.quoted(v)) }
        if n.isDir { fields.append("\"dir\":true") }
        if let at = n.expiresAt {
            let left = Int64(clamping: at) - Int64(clamping: now)
            let ttl = left / 1000 + (left % 1000 > 0 ? 1 : 0)
            fields.append("\"expiration\":\"\(Self.rfc3339(milliseconds: at))\"")
            if ttl != 0 { fields.append("\"ttl\":\(ttl)") }
        }
        if n.isDir && listing {
            let kids = v2Store.children(of: n.key, sorted: sorted)
            if !kids.isEmpty {
                fields.append("\"nodes\":[" + kids.map {
                    v2NodeJSON($0, now: now, listing: recursive, recursive: recursive, sorted: sorted)
                }.joined(separator: ",") + "]")
            }
        }
        if n.modifiedIndex != 0 { fields.append("\"modifiedIndex\":\(n.modifiedIndex)") }
        if n.createdIndex != 0 { fields.append("\"createdIndex\":\(n.createdIndex)") }
        return "{" + fields.joined(separator: ",") + "}"
    }

    static func v2ErrorJSON(_ e: V2Error) -> String {
        "{\"errorCode\":\(e.code.rawValue),\"message\":\(GoJSONText.quoted(e.message)),\"cause\":\(GoJSONText.quoted(e.cause)),\"index\":\(e.index)}\n"
    }

    /// Go's time.Time JSON (RFC 3339 in UTC, fraction without trailing zeros).
    static func rfc3339(milliseconds ms: UInt64) -> String {
        var t = time_t(ms / 1000)
        var tm = tm()
        gmtime_r(&t, &tm)
        func two(_ v: Int32) -> String { v < 10 ? "0\(v)" : "\(v)" }
        var s = "\(tm.tm_year + 1900)-\(two(tm.tm_mon + 1))-\(two(tm.tm_mday))T\(two(tm.tm_hour)):\(two(tm.tm_min)):\(two(tm.tm_sec))"
        let frac = ms % 1000
        if frac != 0 {
            var digits = String(frac)
            digits = String(repeating: "0", count: 3 - digits.count) + digits
            while digits.hasSuffix("0") { digits.removeLast() }
            s += "." + digits
        }
        return s + "Z"
    }

    // MARK: Members and stats

    private func v2MemberJSON() -> String {
        let m = selfMember
        let urls = { (u: [String]) in "[" + u.map { GoJSONText.quoted($0) }.joined(separator: ",") + "]" }
        return "{\"id\":\"\(hex(m.id))\",\"name\":\(GoJSONText.quoted(m.name)),\"peerURLs\":\(urls(m.peerUrls)),\"clientURLs\":\(urls(m.clientUrls))}"
    }

    private func v2Members(_ request: HTTP1Request) -> HTTP1Response {
        let sub = request.path.dropFirst("/v2/members".count).drop { $0 == "/" }
        var response: HTTP1Response
        switch (request.method, sub) {
        case ("GET", ""), ("HEAD", ""):
            response = HTTP1Response(contentType: "application/json", text: "{\"members\":[\(v2MemberJSON())]}\n")
        case ("GET", "leader"), ("HEAD", "leader"):
            response = HTTP1Response(contentType: "application/json", text: v2MemberJSON() + "\n")
        case ("GET", _), ("HEAD", _):
            response = HTTP1Response(status: 404, contentType: "application/json", text: "{\"message\":\"Not found\"}\n")
        case ("POST", _), ("PUT", _), ("DELETE", _):
            response = HTTP1Response(status: 501, contentType: "application/json",
                                     text: "{\"message\":\"member changes need clustering, which swetcd does not have yet\"}\n")
        default:
            return Self.v2MethodNotAllowed("GET, POST, DELETE, PUT")
        }
        response.headers = v2CommonHeaders
        return response
    }

    private func v2StatsResponse(_ request: HTTP1Request) -> HTTP1Response {
        guard request.method == "GET" else { return Self.v2MethodNotAllowed("GET") }
        let id = "\"\(hex(memberID))\""
        let text: String
        switch request.path {
        case "/v2/stats/self":
            let up = Double(monotonicNanoseconds() - startedAt.monotonic) / 1e9
            let start = Self.rfc3339(milliseconds: startedAt.wall)
            text = "{\"name\":\(GoJSONText.quoted(config.name)),\"id\":\(id),\"state\":\"StateLeader\",\"startTime\":\"\(start)\","
                + "\"leaderInfo\":{\"leader\":\(id),\"uptime\":\"\(goDuration(up))\",\"startTime\":\"\(start)\"},"
                + "\"recvAppendRequestCnt\":0,\"sendAppendRequestCnt\":0}"
        case "/v2/stats/leader":
            text = "{\"leader\":\(id),\"followers\":{}}"
        case "/v2/stats/store":
            text = v2Stats.json
        default:
            return HTTP1Response(status: 404, text: "404 page not found\n")
        }
        return HTTP1Response(contentType: "application/json", text: text)
    }
}

/// A `GET ?wait=true` waiting for its change (or streaming them).
final class V2Watch {
    let path: String
    let recursive: Bool
    let stream: Bool
    /// The next index it wants.
    var since: UInt64
    let exchange: HTTP1Exchange
    var done = false

    init(path: String, recursive: Bool, stream: Bool, since: UInt64, exchange: HTTP1Exchange) {
        self.path = path
        self.recursive = recursive
        self.stream = stream
        self.since = since
        self.exchange = exchange
    }
}

/// A v2 change's answer as the apply hands it to the HTTP side: the
/// status, the indexes for the headers, the JSON body.
struct V2Answer: Equatable {
    var status: Int
    var etcdIndex: UInt64
    var raftIndex: UInt64
    var body: [UInt8]

    init(status: Int, etcdIndex: UInt64, raftIndex: UInt64, body: [UInt8]) {
        self.status = status
        self.etcdIndex = etcdIndex
        self.raftIndex = raftIndex
        self.body = body
    }

    init(_ e: V2Error) {
        self.init(status: e.httpStatus, etcdIndex: e.index, raftIndex: 0, body: Array(EtcdServer.v2ErrorJSON(e).utf8))
    }

    func encoded() -> [UInt8] {
        bigEndianBytes(UInt64(status)) + bigEndianBytes(etcdIndex) + bigEndianBytes(raftIndex) + body
    }

    init?(encoded b: [UInt8]) {
        guard b.count >= 24, let status = bigEndianUInt64(b[0..<8]).flatMap({ Int(exactly: $0) }),
              let etcdIndex = bigEndianUInt64(b[8..<16]), let raftIndex = bigEndianUInt64(b[16..<24]) else { return nil }
        self.init(status: status, etcdIndex: etcdIndex, raftIndex: raftIndex, body: Array(b[24...]))
    }
}

/// etcd's v2 store statistics (`/v2/stats/store`).
struct V2Stats {
    var getsSuccess = 0, getsFail = 0, setsSuccess = 0, setsFail = 0, deleteSuccess = 0, deleteFail = 0
    var updateSuccess = 0, updateFail = 0, createSuccess = 0, createFail = 0
    var compareAndSwapSuccess = 0, compareAndSwapFail = 0, compareAndDeleteSuccess = 0, compareAndDeleteFail = 0
    var expireCount = 0, watchers = 0

    /// Counts an applied change under the operation etcd would name it.
    mutating func count(_ r: V2Request, failed: Bool) {
        let compared = r.prevIndex > 0 || !r.prevValue.isEmpty
        switch r.method {
        case .put:
            switch r.prevExist {
            case true? where !compared: failed ? (updateFail += 1) : (updateSuccess += 1)
            case false?: failed ? (createFail += 1) : (createSuccess += 1)
            default:
                if compared { failed ? (compareAndSwapFail += 1) : (compareAndSwapSuccess += 1) } else {
                    failed ? (setsFail += 1) : (setsSuccess += 1)
                }
            }
        case .post: failed ? (createFail += 1) : (createSuccess += 1)
        case .delete:
            if compared { failed ? (compareAndDeleteFail += 1) : (compareAndDeleteSuccess += 1) } else {
                failed ? (deleteFail += 1) : (deleteSuccess += 1)
            }
        case .expire: break
        }
    }

    var json: String {
        "{\"getsSuccess\":\(getsSuccess),\"getsFail\":\(getsFail),\"setsSuccess\":\(setsSuccess),\"setsFail\":\(setsFail),"
            + "\"deleteSuccess\":\(deleteSuccess),\"deleteFail\":\(deleteFail),\"updateSuccess\":\(updateSuccess),"
            + "\"updateFail\":\(updateFail),\"createSuccess\":\(createSuccess),\"createFail\":\(createFail),"
            + "\"compareAndSwapSuccess\":\(compareAndSwapSuccess),\"compareAndSwapFail\":\(compareAndSwapFail),"
            + "\"compareAndDeleteSuccess\":\(compareAndDeleteSuccess),\"compareAndDeleteFail\":\(compareAndDeleteFail),"
            + "\"expireCount\":\(expireCount),\"watchers\":\(watchers)}"
    }
}

/// Go's time.Duration String for a non-negative number of seconds.
func goDuration(_ seconds: Double) -> String {
    let ns = UInt64(max(seconds, 0) * 1e9)
    if ns == 0 { return "0s" }
    if ns < 1_000_000_000 {
        // Go switches to ms / µs / ns below a second.
        for (unit, size) in [("ms", 1_000_000 as UInt64), ("µs", 1_000), ("ns", 1)] where ns >= size {
            return fraction(ns, size) + unit
        }
    }
    let h = ns / 3_600_000_000_000, m = ns / 60_000_000_000 % 60
    let s = fraction(ns % 60_000_000_000, 1_000_000_000) + "s"
    return (h > 0 ? "\(h)h\(m)m" : m > 0 ? "\(m)m" : "") + s
}

private func fraction(_ v: UInt64, _ unit: UInt64) -> String {
    var digits = String(v % unit)
    let width = String(unit - 1).count
    if unit == 1 { return "\(v)" }
    digits = String(repeating: "0", count: width - digits.count) + digits
    while digits.hasSuffix("0") { digits.removeLast() }
    return "\(v / unit)" + (digits.isEmpty ? "" : "." + digits)
}
