import Synchronization
/// An HTTP/1.1 request, as the handler sees it.
public struct HTTP1Request: Sendable {
    public var method: String
    /// The path with its query, as sent.
    public var target: String
    public var version: String
    /// Header names lower-cased.
    public var headers: [(name: String, value: String)]
    public var body: [UInt8]

    public func header(_ name: String) -> String? {
        headers.first { $0.name == name }?.value
    }

    public var path: String { String(target.prefix { $0 != "?" }) }
}

public struct HTTP1Response: Sendable {
    public var status: Int
    public var contentType: String
    public var body: [UInt8]
    /// Headers besides Content-Type, Content-Length and Connection.
    public var headers: [(name: String, value: String)] = []

    public init(status: Int = 200, contentType: String = "text/plain; charset=utf-8", body: [UInt8]) {
        self.status = status
        self.contentType = contentType
        self.body = body
    }

    public init(status: Int = 200, contentType: String = "text/plain; charset=utf-8", text: String) {
        self.init(status: status, contentType: contentType, body: Array(text.utf8))
    }
}

/// Answers HTTP/1.1 requests on the client port (/health, /version, the
/// JSON gateway), now or later, through the exchange.
public protocol HTTP1Handler: AnyObject {
    func handle(_ request: HTTP1Request, _ exchange: HTTP1Exchange)
}

/// One request's answer, on the service loop's thread: a whole response
/// (`respond`) or a chunked stream (`startStream`, `send`..., `end`). The
/// connection reads no further request until this one is answered
/// (HTTP/1.1 answers in order). Answering after the client left does
/// nothing. With the connection on an I/O loop (`crossing`), the bytes are
/// posted there and what the connection reports is posted back.
public final class HTTP1Exchange {
    let keepAlive: Bool
    let version: String
    /// Used on the connection's loop only.
    weak var connection: Connection?
    private(set) var finished = false
    private var streaming = false
    /// The client went away before the answer was done.
    public var onClose: (() -> Void)?
    /// The connection's output drained: room for more of a stream.
    public var onWritable: (() -> Void)?

    let crossing: LoopCrossing?
    // A crossing exchange's view of the connection: whether it closed,
    // bytes posted and written, and the output's length when last seen.
    private let connectionClosed = Atomic<Bool>(false)
    private var postedBytes = 0
    private let writtenBytes = Atomic<Int>(0)
    private let lastOutputBytes = Atomic<Int>(0)

    init(connection: Connection, keepAlive: Bool, version: String, crossing: LoopCrossing?) {
        self.connection = connection
        self.keepAlive = keepAlive
        self.version = version
        self.crossing = crossing
    }

    public var isClosed: Bool {
        if crossing != nil { return finished || connectionClosed.load(ordering: .acquiring) }
        return finished || connection == nil || connection!.isClosed
    }

    public func respond(_ response: HTTP1Response) {
        guard !finished, !streaming else { return }
        finished = true
        write(HTTP1Parser.serialize(response, keepAlive: keepAlive, version: version), last: true)
    }

    /// Starts a chunked response (HTTP/1.1).
    public func startStream(status: Int = 200, contentType: String, headers: [(name: String, value: String)] = []) {
        guard !finished, !streaming else { return }
        streaming = true
        var head = "HTTP/1.1 \(status) \(HTTP1Parser.reason(status))\r\n"
        for h in headers { head += "\(h.name): \(h.value)\r\n" }
        head += "Content-Type: \(contentType)\r\nTransfer-Encoding: chunked\r\n"
        if !keepAlive { head += "Connection: close\r\n" }
        head += "\r\n"
        write(Array(head.utf8), last: false)
    }

    public func send(_ chunk: [UInt8]) {
        guard streaming, !finished, !chunk.isEmpty else { return }
        write(Array((String(chunk.count, radix: 16) + "\r\n").utf8) + chunk + [13, 10], last: false)
    }

    public func end() {
        guard streaming, !finished else { return }
        finished = true
        write(Array("0\r\n\r\n".utf8), last: true)
    }

    /// Bytes queued on the connection and not yet written.
    public var queuedBytes: Int {
        guard crossing != nil else { return connection?.outputBytes ?? 0 }
        return postedBytes - writtenBytes.load(ordering: .relaxed) + lastOutputBytes.load(ordering: .relaxed)
    }

    /// Hands bytes to the connection (`last`: the answer's end).
    private func write(_ bytes: [UInt8], last: Bool) {
        guard let crossing else { return writeOnConnection(bytes, last: last) }
        postedBytes += bytes.count
        crossing.toIO.post { [self] in writeOnConnection(bytes, last: last) }
    }

    private func writeOnConnection(_ bytes: [UInt8], last: Bool) {
        guard let connection else { return }
        if last {
            connection.finishExchange(self, bytes)
        } else {
            bytes.withUnsafeBytes { connection.write($0) }
            connectionWrote(bytes.count, outputBytes: connection.outputBytes)
        }
    }

    // MARK: What the connection reports (on its loop)

    func connectionWrote(_ n: Int, outputBytes: Int) {
        guard crossing != nil else { return }
        writtenBytes.add(n, ordering: .relaxed)
        lastOutputBytes.store(outputBytes, ordering: .relaxed)
    }

    func deliverWritable(outputBytes: Int) {
        guard let crossing else { return onWritable?() ?? () }
        lastOutputBytes.store(outputBytes, ordering: .relaxed)
        crossing.toService.post { [self] in if !isClosed { onWritable?() } }
    }

    func deliverClose() {
        guard let crossing else { return onClose?() ?? () }
        connectionClosed.store(true, ordering: .releasing)
        crossing.toService.post { [self] in onClose?() }
    }
}

/// Parses HTTP/1.x requests off the front of a byte stream: request line,
/// headers, and a Content-Length body. Pipelined requests come out in order.
struct HTTP1Parser {
    enum Parsed {
        case request(HTTP1Request, consumed: Int)
        case needMore
        case bad(status: Int)
    }

    static func parse(_ bytes: UnsafeRawBufferPointer, limits: TransportLimits) -> Parsed {
        // The head ends at the first CRLF CRLF.
        var headEnd = -1
        if bytes.count >= 4 {
            for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
                headEnd = i
                break
            }
        }
        if headEnd < 0 { return bytes.count > limits.maxHTTP1HeadBytes ? .bad(status: 431) : .needMore }
        let head = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<headEnd]), as: UTF8.self)
        var lines = head.split(separator: "\r\n", omittingEmptySubsequences: false).map(String.init)
        let requestLine = lines.removeFirst().split(separator: " ").map(String.init)
        guard requestLine.count == 3, requestLine[2].hasPrefix("HTTP/1.") else { return .bad(status: 400) }
        var headers: [(name: String, value: String)] = []
        for line in lines {
            guard let colon = line.firstIndex(of: ":") else { return .bad(status: 400) }
            let name = line[..<colon].lowercased()
            let value = line[line.index(after: colon)...].trimmingSpaces()
            headers.append((name, value))
        }
        var request = HTTP1Request(method: requestLine[0], target: requestLine[1], version: requestLine[2],
                                   headers: headers, body: [])
        if request.header("transfer-encoding") != nil { return .bad(status: 411) }
        let length = Int(request.header("content-length") ?? "0") ?? -1
        if length < 0 { return .bad(status: 400) }
        if length > limits.maxHTTP1BodyBytes { return .bad(status: 413) }
        let total = headEnd + 4 + length
        guard bytes.count >= total else { return .needMore }
        request.body = Array(UnsafeRawBufferPointer(rebasing: bytes[(headEnd + 4)..<total]))
        return .request(request, consumed: total)
    }

    static func wantsKeepAlive(_ r: HTTP1Request) -> Bool {
        let connection = r.header("connection")?.lowercased() ?? ""
        return r.version == "HTTP/1.0" ? connection == "keep-alive" : connection != "close"
    }

    static func serialize(_ response: HTTP1Response, keepAlive: Bool, version: String) -> [UInt8] {
        var head = "\(version == "HTTP/1.0" ? "HTTP/1.0" : "HTTP/1.1") \(response.status) \(reason(response.status))\r\n"
        for h in response.headers { head += "\(h.name): \(h.value)\r\n" }
        head += "Content-Type: \(response.contentType)\r\n"
        head += "Content-Length: \(response.body.count)\r\n"
        head += keepAlive ? (version == "HTTP/1.0" ? "Connection: keep-alive\r\n" : "") : "Connection: close\r\n"
        head += "\r\n"
        return Array(head.utf8) + response.body
    }

    static func reason(_ status: Int) -> String {
        switch status {
        case 200: return "OK"
        case 201: return "Created"
        case 204: return "No Content"
        case 400: return "Bad Request"
        case 404: return "Not Found"
        case 405: return "Method Not Allowed"
        case 411: return "Length Required"
        case 413: return "Payload Too Large"
        case 415: return "Unsupported Media Type"
        case 401: return "Unauthorized"
        case 403: return "Forbidden"
        case 409: return "Conflict"
        case 412: return "Precondition Failed"
        case 429: return "Too Many Requests"
        case 501: return "Not Implemented"
        case 504: return "Gateway Timeout"
        case 431: return "Request Header Fields Too Large"
        case 500: return "Internal Server Error"
        case 503: return "Service Unavailable"
        default: return "Status"
        }
    }
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
