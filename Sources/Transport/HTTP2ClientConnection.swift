import CLibevent
import CNghttp2
import COpenSSL
import EtcdStatus
#if canImport(Glibc)
import Glibc
#endif

/// The outcome of a client call: the response messages, or the status the
/// server (or the connection) ended it with.
public typealias GRPCClientResult = Result<[[UInt8]], GRPCStatus>

/// One call in flight on a client connection.
final class ClientStream {
    let path: String
    var request = ByteQueue()
    var response = ByteQueue()
    var status: GRPCStatus?
    var httpStatus = ""
    /// Streaming calls get each message as it arrives; unary ones all at the end.
    let onMessage: (([UInt8]) -> Void)?
    var messages: [[UInt8]] = []
    let completion: (GRPCClientResult) -> Void
    /// When the call gives up (CLOCK_MONOTONIC nanoseconds).
    var deadline: UInt64?
    var isDone = false
    /// No more request messages will come (unary calls: from the start).
    var requestClosed = true
    /// The data provider returned DEFERRED and waits for more to send.
    var isDeferred = false
    /// Called (on the loop, later) each time every queued request byte has
    /// gone to the connection: the sender's cue for more.
    var onRequestDrained: (() -> Void)?

    init(path: String, onMessage: (([UInt8]) -> Void)?, completion: @escaping (GRPCClientResult) -> Void) {
        self.path = path
        self.onMessage = onMessage
        self.completion = completion
    }

    func complete(_ result: GRPCClientResult) {
        guard !isDone else { return }
        isDone = true
        completion(result)
    }
}

/// The client side of one HTTP/2 connection (h2c with prior knowledge) to a
/// gRPC server, on an event loop: many calls multiplexed as streams. Used
/// only on its loop's thread.
public final class HTTP2ClientConnection {
    public let host: String
    public let port: UInt16
    private let loop: EventLoop
    private var bev: OpaquePointer?
    private var session: OpaquePointer?
    private var streams: [Int32: ClientStream] = [:]
    private var finished: [(ClientStream, GRPCClientResult)] = []
    public private(set) var wasConnected = false
    public private(set) var isClosed = false
    /// Called once when the connection closes or fails, with why.
    public var onClose: ((String) -> Void)?
    private var inCallback = false

    public var activeCalls: Int { streams.count }
    private lazy var deadlineTimer = DeadlineTimer(loop: loop) { [unowned self] now in deadlinesPassed(now) }

    /// Gives up on the calls past their deadline; returns the next deadline.
    private func deadlinesPassed(_ now: UInt64) -> UInt64? {
        var next: UInt64?
        for (id, stream) in streams {
            guard let due = stream.deadline, !stream.isDone else { continue }
            if due <= now {
                nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, UInt32(NGHTTP2_CANCEL.rawValue))
                streams[id] = nil
                stream.complete(.failure(GRPCStatus(.deadlineExceeded, "context deadline exceeded")))
            } else {
                next = min(next ?? due, due)
            }
        }
        flush()
        return next
    }

    /// TLS for this connection; nil: h2c with prior knowledge.
    private let tls: TLSClientContext?

    public init(loop: EventLoop, host: String, port: UInt16, tls: TLSClientContext? = nil) {
        self.loop = loop
        self.host = host
        self.port = port
        self.tls = tls
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, _, user in
            guard let frame, let user, let name, let value else { return 0 }
            let c = Unmanaged<HTTP2ClientConnection>.fromOpaque(user).takeUnretainedValue()
            guard let stream = c.streams[frame.pointee.hd.stream_id] else { return 0 }
            let n = String(decoding: UnsafeBufferPointer(start: name, count: nameLength), as: UTF8.self)
            let v = String(decoding: UnsafeBufferPointer(start: value, count: valueLength), as: UTF8.self)
            switch n {
            case ":status": stream.httpStatus = v
            case "grpc-status":
                let code = GRPCStatusCode(rawValue: Int(v) ?? 2) ?? .unknown
                stream.status = GRPCStatus(code, stream.status?.message ?? "")
            case "grpc-message":
                stream.status = GRPCStatus(stream.status?.code ?? .unknown, percentDecode(v))
            default: break
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, length, user in
            guard let user, let data else { return 0 }
            let c = Unmanaged<HTTP2ClientConnection>.fromOpaque(user).takeUnretainedValue()
            c.streams[streamID]?.response.append(UnsafeRawBufferPointer(start: data, count: length))
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { session, frame, user in
            guard let session, let frame, let user else { return 0 }
            let c = Unmanaged<HTTP2ClientConnection>.fromOpaque(user).takeUnretainedValue()
            let id = frame.pointee.hd.stream_id
            if frame.pointee.hd.type == UInt8(NGHTTP2_DATA.rawValue), let stream = c.streams[id] {
                c.takeMessages(stream)
            }
            // The server's trailers end the call even while this side is
            // still sending (a stream it refused): reset our half, so the
            // stream closes and the call completes with the server's status.
            if frame.pointee.hd.flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0, c.streams[id] != nil,
               nghttp2_session_get_stream_local_close(session, id) == 0 {
                nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, UInt32(NGHTTP2_NO_ERROR.rawValue))
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, errorCode, user in
            guard let user else { return 0 }
            let c = Unmanaged<HTTP2ClientConnection>.fromOpaque(user).takeUnretainedValue()
            guard let stream = c.streams.removeValue(forKey: streamID) else { return 0 }
            c.takeMessages(stream)
            let result: GRPCClientResult
            if let status = stream.status {
                result = status.code == .ok ? .success(stream.messages) : .failure(status)
            } else if errorCode != 0 {
                result = .failure(GRPCStatus(.unavailable, "stream reset by the server (HTTP/2 error \(errorCode))"))
            } else {
                result = .failure(GRPCStatus(.internal, "response ended without a grpc-status (HTTP \(stream.httpStatus))"))
            }
            c.finished.append((stream, result))
            return 0
        }
        nghttp2_session_client_new(&session, callbacks, Unmanaged.passUnretained(self).toOpaque())
        var settings = [nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                                               value: 1 << 24)]
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0, 1 << 28)
        connect()
    }

    deinit {
        output?.detach()
        if let bev { bufferevent_free(bev) }
        nghttp2_session_del(session)
    }

    private func connect() {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &addr.sin_addr) == 1,
              let bev = tls.map({ $0.connectingBufferevent(loop.base, host: host) })
                ?? bufferevent_socket_new(loop.base, -1, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue)) else {
            fail("cannot connect to \(host):\(port): not an IPv4 address")
            return
        }
        self.bev = bev
        bufferevent_setcb(bev, { _, arg in
            Unmanaged<HTTP2ClientConnection>.fromOpaque(arg!).takeUnretainedValue().readable()
        }, { _, arg in
            Unmanaged<HTTP2ClientConnection>.fromOpaque(arg!).takeUnretainedValue().writable()
        }, { _, events, arg in
            Unmanaged<HTTP2ClientConnection>.fromOpaque(arg!).takeUnretainedValue().event(events)
        }, Unmanaged.passUnretained(self).toOpaque())
        if tls == nil {
            // Written directly once connected (the connect itself is watched
            // by libevent without write interest).
            output = DirectOutput(bev: bev, loop: loop) { [unowned self] in flush() }
            // (A new bufferevent has writing enabled.)
            bufferevent_disable(bev, Int16(EV_WRITE))
            bufferevent_enable(bev, Int16(EV_READ))
        } else {
            bufferevent_enable(bev, Int16(EV_READ | EV_WRITE))
        }
        let rc = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bufferevent_socket_connect(bev, $0, Int32(MemoryLayout<sockaddr_in>.size))
            }
        }
        if rc != 0 { fail("cannot connect to \(host):\(port)") }
    }

    /// Starts a call. `onMessage` makes it streaming; `completion` runs once,
    /// on the loop. `timeout` (seconds) is sent as grpc-timeout and enforced
    /// here too.
    @discardableResult
    public func call(_ path: String, request: [UInt8], timeout: Double?, metadata: [(String, String)] = [],
                     onMessage: (([UInt8]) -> Void)? = nil, keepSending: Bool = false,
                     completion: @escaping (GRPCClientResult) -> Void) -> Int32 {
        guard !isClosed else {
            completion(.failure(GRPCStatus(.unavailable, "connection to \(host):\(port) is closed")))
            return -1
        }
        let stream = ClientStream(path: path, onMessage: onMessage, completion: completion)
        stream.requestClosed = !keepSending
        GRPCFrame.encode(request, into: &stream.request)
        var headers = [(":method", "POST"), (":scheme", "http"), (":path", path), (":authority", "\(host):\(port)"),
                       ("content-type", "application/grpc"), ("te", "trailers")]
        if let timeout { headers.append(("grpc-timeout", "\(max(Int(timeout * 1000), 1))m")) }
        headers += metadata
        var provider = nghttp2_data_provider()
        provider.read_callback = { session, streamID, buffer, length, flags, _, user in
            guard let user, let buffer, let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
            let c = Unmanaged<HTTP2ClientConnection>.fromOpaque(user).takeUnretainedValue()
            guard let stream = c.streams[streamID] else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
            let n = stream.request.copyOut(into: buffer, max: length)
            if stream.request.isEmpty {
                if stream.requestClosed {
                    flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue
                } else if n == 0 {
                    stream.isDeferred = true
                    // Not from inside nghttp2: the sender calls back into it.
                    if let drained = stream.onRequestDrained.map(LoopBound.init) { c.loop.execute { drained.value() } }
                    return Int(NGHTTP2_ERR_DEFERRED.rawValue)
                }
            }
            return n
        }
        let id = withHeaderVector(headers) { nva, count in
            nghttp2_submit_request(session, nil, nva, count, &provider, nil)
        }
        guard id > 0 else {
            completion(.failure(GRPCStatus(.unavailable, "cannot start a stream: \(String(cString: nghttp2_strerror(id)))")))
            return -1
        }
        streams[id] = stream
        if let timeout {
            let due = deadline(after: timeout)
            stream.deadline = due
            deadlineTimer.arm(at: due)
        }
        flush()
        return id
    }

    /// Sends one more request message on a stream opened with `keepSending`.
    public func send(_ message: [UInt8], on id: Int32) {
        guard let stream = streams[id], !stream.requestClosed else { return }
        GRPCFrame.encode(message, into: &stream.request)
        resume(stream, id)
    }

    /// Asks for `body` each time a stream opened with `keepSending` has
    /// sent everything queued on it: a large upload sends a little at a
    /// time instead of queueing all of it.
    public func onRequestDrained(_ id: Int32, _ body: @escaping () -> Void) {
        streams[id]?.onRequestDrained = body
    }

    /// Bytes queued on a stream and not yet handed to the connection.
    public func queuedRequestBytes(on id: Int32) -> Int {
        streams[id]?.request.count ?? 0
    }

    /// Half-closes a stream opened with `keepSending`: no more messages.
    public func closeSend(on id: Int32) {
        guard let stream = streams[id], !stream.requestClosed else { return }
        stream.requestClosed = true
        resume(stream, id)
    }

    /// Abandons a call: the server is told (RST_STREAM CANCEL) and the
    /// completion runs with CANCELLED.
    public func cancel(_ id: Int32) {
        guard let stream = streams.removeValue(forKey: id) else { return }
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), id, UInt32(NGHTTP2_CANCEL.rawValue))
        stream.complete(.failure(GRPCStatus(.canceled, "call cancelled by the client")))
        flush()
    }

    private func resume(_ stream: ClientStream, _ id: Int32) {
        if stream.isDeferred {
            stream.isDeferred = false
            nghttp2_session_resume_data(session, id)
        }
        flush()
    }

    /// Ends the connection; calls in flight fail with UNAVAILABLE.
    public func close() {
        fail("connection closed by the client")
    }

    // MARK: I/O

    private func takeMessages(_ stream: ClientStream) {
        while case .message(let m) = GRPCFrame.next(from: &stream.response, maxMessageBytes: Int.max) {
            if let onMessage = stream.onMessage { onMessage(m) } else { stream.messages.append(m) }
        }
    }

    private func readable() {
        guard let bev, let input = bufferevent_get_input(bev) else { return }
        let bufferedBytes = evbuffer_get_length(input)
        var rc = 0
        while rc >= 0 && evbuffer_get_length(input) > 0 {
            var vec = iovec()
            guard evbuffer_peek(input, -1, nil, &vec, 1) > 0 else { break }
            rc = nghttp2_session_mem_recv(session, vec.iov_base?.assumingMemoryBound(to: UInt8.self), vec.iov_len)
            evbuffer_drain(input, vec.iov_len)
        }
        if rc >= 0 && output != nil && bufferedBytes >= DirectInput.bufferEventReadCap && !isClosed {
            loop.directInput.read(from: bufferevent_getfd(bev)) { chunk in
                rc = nghttp2_session_mem_recv(session, chunk.baseAddress?.assumingMemoryBound(to: UInt8.self), chunk.count)
                return rc >= 0 && !isClosed
            }
        }
        if rc < 0 {
            fail("HTTP/2 error: \(String(cString: nghttp2_strerror(Int32(rc))))")
            return
        }
        completeFinished()
        flush()
        // A stream reset in answer to the server's trailers closes as the
        // reset goes out.
        completeFinished()
    }

    private func completeFinished() {
        while !finished.isEmpty {
            let done = finished
            finished.removeAll()
            for (stream, result) in done { stream.complete(result) }
        }
    }

    /// Plaintext output, written at the end of the iteration that queued it.
    private var output: DirectOutput?

    private func writable() {
        output?.drained()
        flush()
    }

    private func flush() {
        guard let bev, !isClosed else { return }
        let buffer = bufferevent_get_output(bev)
        var wrote = false
        while evbuffer_get_length(buffer) < 1 << 20 {
            var data: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &data)
            if n <= 0 { break }
            bufferevent_write(bev, data, n)
            wrote = true
        }
        if wrote && wasConnected { output?.queued() }
    }

    private func event(_ events: Int16) {
        if events & Int16(BEV_EVENT_CONNECTED) != 0 {
            wasConnected = true
            var one: Int32 = 1
            setsockopt(bufferevent_getfd(bev), Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            flush()
            output?.queued()
            return
        }
        if events & Int16(BEV_EVENT_EOF | BEV_EVENT_ERROR) != 0 {
            var why = wasConnected ? "connection to \(host):\(port) lost" : "cannot connect to \(host):\(port)"
            if tls != nil, let bev, case let code = bufferevent_get_openssl_error(bev), code != 0 {
                why += ": TLS: \(TLSError.text(of: code))"
            }
            fail(why)
        }
    }

    private func fail(_ why: String) {
        guard !isClosed else { return }
        isClosed = true
        deadlineTimer.cancel()
        output?.detach()
        if let bev { bufferevent_free(bev) }
        bev = nil
        let open = streams.values
        streams.removeAll()
        for s in open { s.complete(.failure(GRPCStatus(.unavailable, why))) }
        completeFinished()
        onClose?(why)
    }

}

/// Undoes `grpc-message` percent-encoding.
func percentDecode(_ s: String) -> String {
    var bytes: [UInt8] = []
    var rest = Array(s.utf8)[...]
    while let b = rest.popFirst() {
        if b == 0x25, rest.count >= 2, let v = UInt8(String(decoding: rest.prefix(2), as: UTF8.self), radix: 16) {
            bytes.append(v)
            rest = rest.dropFirst(2)
        } else {
            bytes.append(b)
        }
    }
    return String(decoding: bytes, as: UTF8.self)
}
