import Testing
@testable import Transport

@Suite struct GRPCFramingTests {
    @Test func messagesRoundTripThroughTheLengthPrefix() {
        var q = ByteQueue()
        GRPCFrame.encode([1, 2, 3], into: &q)
        GRPCFrame.encode([], into: &q)
        #expect(q.count == 5 + 3 + 5)
        guard case .message(let a) = GRPCFrame.next(from: &q, maxMessageBytes: 10) else { Issue.record("no first"); return }
        guard case .message(let b) = GRPCFrame.next(from: &q, maxMessageBytes: 10) else { Issue.record("no second"); return }
        #expect(a == [1, 2, 3] && b == [] && q.isEmpty)
    }

    /// A drained queue lets a large buffer go (an idle stream must not hold
    /// its largest burst) but keeps a small one, and the next burst
    /// reserves the last one's size at once.
    @Test func aDrainedQueueKeepsOnlyASmallBuffer() {
        var q = ByteQueue()
        q.append([UInt8](repeating: 7, count: 10_000))
        q.drop(10_000)
        #expect(q.isEmpty && q.capacity <= ByteQueue.keptCapacity, "kept \(q.capacity) bytes")
        q.reserveIfEmpty(10)
        #expect(q.capacity >= 10_000, "reserved \(q.capacity) for the next burst")
        var small = ByteQueue()
        small.append([UInt8](repeating: 1, count: 100))
        let room = small.capacity
        small.drop(100)
        #expect(small.capacity == room && room > 0, "a small buffer stays for the next message")
    }

    @Test func partialOversizedAndCompressedFrames() {
        var q = ByteQueue()
        q.append([0, 0, 0, 0, 4, 9, 9])
        guard case .needMore = GRPCFrame.next(from: &q, maxMessageBytes: 10) else { Issue.record("want needMore"); return }
        var big = ByteQueue()
        big.append([0, 0, 1, 0, 0])
        guard case .tooLarge(65536) = GRPCFrame.next(from: &big, maxMessageBytes: 1000) else { Issue.record("want tooLarge"); return }
        var zipped = ByteQueue()
        zipped.append([1, 0, 0, 0, 0])
        guard case .compressed = GRPCFrame.next(from: &zipped, maxMessageBytes: 10) else { Issue.record("want compressed"); return }
    }

    @Test func statusMessagesArePercentEncoded() {
        #expect(percentEncodeGRPCMessage("etcdserver: key is not provided") == "etcdserver: key is not provided")
        #expect(percentEncodeGRPCMessage("100% ü\n") == "100%25 %C3%BC%0A")
    }

    @Test func timeoutsInEveryUnit() {
        #expect(parseGRPCTimeout("2S") == 2)
        #expect(parseGRPCTimeout("1500m") == 1.5)
        #expect(parseGRPCTimeout("1M") == 60)
        #expect(parseGRPCTimeout("1H") == 3600)
        #expect(parseGRPCTimeout("1000u") == 0.001)
        #expect(parseGRPCTimeout("x") == nil && parseGRPCTimeout("5X") == nil)
    }
}

@Suite struct HTTP1ParserTests {
    func parse(_ s: String) -> HTTP1Parser.Parsed {
        Array(s.utf8).withUnsafeBytes { HTTP1Parser.parse($0, limits: TransportLimits()) }
    }

    @Test func requestWithHeadersAndBody() {
        guard case .request(let r, let n) = parse("POST /v3/kv/put?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}GET") else {
            Issue.record("not parsed"); return
        }
        #expect(r.method == "POST" && r.path == "/v3/kv/put" && r.target == "/v3/kv/put?x=1")
        #expect(r.header("host") == "a" && r.body == Array("{}".utf8))
        #expect(n == "POST /v3/kv/put?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}".utf8.count)
    }

    @Test func incompleteAndBadRequests() {
        guard case .needMore = parse("GET /health HTTP/1.1\r\nHost: a\r\n") else { Issue.record("want needMore"); return }
        guard case .needMore = parse("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nab") else { Issue.record("want needMore"); return }
        guard case .bad(400) = parse("NONSENSE\r\n\r\n") else { Issue.record("want 400"); return }
        guard case .bad(411) = parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n") else { Issue.record("want 411"); return }
    }

    @Test func keepAliveFollowsTheVersion() {
        func request(_ version: String, _ connection: String?) -> HTTP1Request {
            HTTP1Request(method: "GET", target: "/", version: version,
                         headers: connection.map { [("connection", $0)] } ?? [], body: [])
        }
        #expect(HTTP1Parser.wantsKeepAlive(request("HTTP/1.1", nil)))
        #expect(!HTTP1Parser.wantsKeepAlive(request("HTTP/1.1", "close")))
        #expect(!HTTP1Parser.wantsKeepAlive(request("HTTP/1.0", nil)))
        #expect(HTTP1Parser.wantsKeepAlive(request("HTTP/1.0", "Keep-Alive")))
    }

    @Test func sniffingTellsHTTP1FromGarbage() {
        #expect(Connection.looksLikeHTTP1(Array("GET / HTTP/1.1".utf8)))
        #expect(Connection.looksLikeHTTP1(Array("GE".utf8)))
        #expect(!Connection.looksLikeHTTP1([0, 1, 2]))
        #expect(!Connection.looksLikeHTTP1(Array(" GET".utf8)))
    }
}
