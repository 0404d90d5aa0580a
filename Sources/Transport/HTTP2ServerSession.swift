import CNghttp2
#if canImport(Glibc)
import Glibc
#endif

/// One request stream of an HTTP/2 connection, carrying one gRPC call.
final class HTTP2Stream {
    let id: Int32
    /// Unchecked: a stream is reached only through its session or its
    /// call, and the session clears every call's stream before it goes
    /// (stream close, `connectionLost`). A checked reference costs an
    /// atomic count each time a response is queued.
    unowned(unsafe) let session: HTTP2ServerSession
    var method = ""
    var path = ""
    /// Listed for the session's next pass over its streams.
    var isQueued = false
    /// content-type is application/grpc (or a +proto, +json variant).
    var isGRPC = false
    var timeout: Double?
    var metadata: [(name: String, value: String)] = []

    var inbound = ByteQueue()
    var outbound = OutboundQueue()
    var call: GRPCCall?
    var grpcMethod: GRPCMethod?
    var dispatched = false
    /// Response headers went out with a data provider (not trailers-only).
    var responseStarted = false
    /// Status to send in trailers once `outbound` is drained.
    var finalStatus: GRPCStatus?
    /// The data provider returned DEFERRED and waits for a resume.
    var isDeferred = false
    /// finish() was called, or the stream closed.
    var isFinished = false
    /// Request data is discarded (the call was refused mid-request).
    var ignoresInput = false
    /// The request's header list so far, as HTTP/2 sizes it.
    var headerListBytes = 0
    /// Reset for a malformed or oversized request: never dispatched.
    var isRefused = false
    /// A unary call: its answer counts toward the session's
    /// `unaryAnswerBytes` until written.
    var isUnary: Bool { grpcMethod?.kind == .unary }
    /// Waiting in the session's `held` list to be dispatched.
    var isHeld = false
    /// When the call's grpc-timeout passes (CLOCK_MONOTONIC nanoseconds;
    /// the session's deadline timer then ends it with DEADLINE_EXCEEDED).
    var deadline: UInt64?

    init(id: Int32, session: HTTP2ServerSession) {
        self.id = id
        self.session = session
    }

    func send(_ message: [UInt8]) {
        guard !isFinished else { return }
        let before = outbound.count
        GRPCFrame.encode(message, into: &outbound)
        messageQueued(before)
    }

    func send(_ message: MessageParts) {
        guard !isFinished else { return }
        let before = outbound.count
        GRPCFrame.encode(message, into: &outbound)
        messageQueued(before)
    }

    /// The message once per value of its varint field, in order.
    /// Returns the bytes framed (0: the stream had finished).
    @discardableResult
    func send(_ message: MessageParts, withEachValue values: [UInt64]) -> Int {
        guard !isFinished else { return 0 }
        let before = outbound.count
        let framed = GRPCFrame.encode(message, withEachValue: values, into: &outbound)
        messageQueued(before)
        return framed
    }

    func send(_ message: GRPCMessageBuffer) {
        guard !isFinished else { return }
        let before = outbound.count
        GRPCFrame.encode(message, into: &outbound)
        messageQueued(before)
    }

    private func messageQueued(_ before: Int) {
        if isUnary { session.unaryAnswerBytes += outbound.count - before }
        startResponseIfNeeded()
        resume()
    }

    func finish(_ status: GRPCStatus) {
        guard !isFinished else { return }
        isFinished = true
        if responseStarted {
            finalStatus = status
            resume()
        } else {
            session.submitTrailersOnly(self, status)
        }
    }

    private func startResponseIfNeeded() {
        guard !responseStarted else { return }
        responseStarted = true
        session.submitResponseHeaders(self)
    }

    private func resume() {
        // Borrowed, not retained: this runs each time a response is queued.
        Unmanaged.passUnretained(session)._withUnsafeGuaranteedRef { session in
            if isDeferred {
                isDeferred = false
                nghttp2_session_resume_data(session.session, id)
            }
            session.scheduleFlush()
        }
    }
}

/// The server side of one HTTP/2 connection (h2c with prior knowledge, or
/// h2 after TLS ALPN): nghttp2 does the framing and flow control; this turns
/// streams into gRPC calls for a `GRPCRouter`.
///
/// nghttp2 calls back into this object while `receive` or `flush` run; those
/// callbacks only record what happened, and user code (handlers, onClose,
/// onWritable) runs after nghttp2 has returned.
final class HTTP2ServerSession {
    fileprivate(set) var session: OpaquePointer?
    /// Unchecked, as `HTTP2Stream.session`: the connection drops its
    /// session when it closes, while it still lives.
    private unowned(unsafe) let connection: Connection
    private let loop: EventLoop
    private let router: GRPCRouter
    private let limits: TransportLimits
    /// Set when the service runs on another loop: calls are routed there.
    private let crossing: LoopCrossing?
    private let methodKinds: [String: GRPCMethodKind]
    private var streams: [Int32: HTTP2Stream] = [:]
    /// Bytes of unary answers queued and not yet written to the socket.
    fileprivate(set) var unaryAnswerBytes = 0
    /// Unary calls whose requests are complete, waiting (in order) while
    /// `unaryAnswerBytes` is at its bound: a client that sends requests and
    /// does not read the answers gets no more answers made for it.
    private var held: [HTTP2Stream] = []
    private var heldHead = 0
    private lazy var deadlineTimer = DeadlineTimer(loop: loop) { [unowned self] now in deadlinesPassed(now) }

    // Work collected during nghttp2 callbacks, run after they return.
    private var ready: [HTTP2Stream] = []
    private var closedCalls: [GRPCCall] = []
    private var writableCalls: [GRPCCall] = []
    private var inInput = false
    private var flushWanted = false
    /// Flushes once after the current callbacks, however many replies they
    /// queued: a write fanned out to thousands of watch streams costs one
    /// pass through nghttp2 per connection, not one per reply.
    private var flushTask: DeferredTask?

    init(connection: Connection, loop: EventLoop, router: GRPCRouter, limits: TransportLimits,
         crossing: LoopCrossing?, methodKinds: [String: GRPCMethodKind]) {
        self.connection = connection
        self.loop = loop
        self.router = router
        self.limits = limits
        self.crossing = crossing
        self.methodKinds = methodKinds
        var callbacks: OpaquePointer?
        nghttp2_session_callbacks_new(&callbacks)
        defer { nghttp2_session_callbacks_del(callbacks) }
        nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks) { _, frame, user in
            guard let frame, let user else { return 0 }
            let s = Unmanaged<HTTP2ServerSession>.fromOpaque(user).takeUnretainedValue()
            if frame.pointee.hd.type == UInt8(NGHTTP2_HEADERS.rawValue),
               frame.pointee.headers.cat == NGHTTP2_HCAT_REQUEST {
                let id = frame.pointee.hd.stream_id
                s.streams[id] = HTTP2Stream(id: id, session: s)
            }
            return 0
        }
        nghttp2_session_callbacks_set_on_header_callback(callbacks) { _, frame, name, nameLength, value, valueLength, _, user in
            guard let frame, let user, let name, let value else { return 0 }
            let s = Unmanaged<HTTP2ServerSession>.fromOpaque(user).takeUnretainedValue()
            guard let stream = s.streams[frame.pointee.hd.stream_id], !stream.isRefused else { return 0 }
            stream.headerListBytes += nameLength + valueLength + 32
            if stream.headerListBytes > Int(s.limits.maxHeaderListBytes) {
                // grpc-go's answer to a header list past its limit.
                s.refuse(stream, NGHTTP2_FRAME_SIZE_ERROR)
                return 0
            }
            // nghttp2's HTTP checks are off (see below), so RFC 9113's rules
            // for a field are applied here: a malformed request is a stream error.
            if !HTTP2ServerSession.isWellFormed(name: UnsafeRawBufferPointer(start: name, count: nameLength),
                                                value: UnsafeRawBufferPointer(start: value, count: valueLength)) {
                s.refuse(stream, NGHTTP2_PROTOCOL_ERROR)
                return 0
            }
            s.header(UnsafeRawBufferPointer(start: name, count: nameLength),
                     UnsafeRawBufferPointer(start: value, count: valueLength), of: stream)
            return 0
        }
        nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks) { _, frame, user in
            guard let frame, let user else { return 0 }
            let s = Unmanaged<HTTP2ServerSession>.fromOpaque(user).takeUnretainedValue()
            s.frameReceived(type: frame.pointee.hd.type, flags: frame.pointee.hd.flags,
                            streamID: frame.pointee.hd.stream_id)
            return 0
        }
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks) { _, _, streamID, data, length, user in
            guard let user, let data else { return 0 }
            let s = Unmanaged<HTTP2ServerSession>.fromOpaque(user).takeUnretainedValue()
            s.dataReceived(streamID: streamID, UnsafeRawBufferPointer(start: data, count: length))
            return 0
        }
        nghttp2_session_callbacks_set_on_stream_close_callback(callbacks) { _, streamID, _, user in
            guard let user else { return 0 }
            let s = Unmanaged<HTTP2ServerSession>.fromOpaque(user).takeUnretainedValue()
            if let stream = s.streams.removeValue(forKey: streamID) {
                stream.isFinished = true
                if stream.isUnary { s.unaryAnswerBytes -= stream.outbound.count }
                if let call = stream.call {
                    call.stream = nil
                    s.closedCalls.append(call)
                }
            }
            return 0
        }
        nghttp2_session_callbacks_set_send_data_callback(callbacks) { _, frame, frameHeader, length, _, user in
            guard let frame, let frameHeader, let user else { return Int32(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
            let s = Unmanaged<HTTP2ServerSession>.fromOpaque(user).takeUnretainedValue()
            return s.sendData(streamID: frame.pointee.hd.stream_id, frameHeader: frameHeader, length: length)
        }
        let me = Unmanaged.passUnretained(self).toOpaque()
        // nghttp2's HTTP checks refuse an :authority with a scheme in it,
        // which etcd's own client sends (`http://host:port`, when etcdctl
        // asks a member by its client URL), and Go's server takes; the
        // headers we act on are checked here instead (POST, the gRPC
        // content type, a known path).
        var options: OpaquePointer?
        nghttp2_option_new(&options)
        defer { nghttp2_option_del(options) }
        nghttp2_option_set_no_http_messaging(options, 1)
        nghttp2_session_server_new2(&session, callbacks, me, options)
        var settings = [
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue),
                                   value: limits.maxConcurrentStreams),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE.rawValue),
                                   value: limits.streamWindowBytes),
            nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE.rawValue),
                                   value: limits.maxHeaderListBytes),
        ]
        nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, settings.count)
        nghttp2_session_set_local_window_size(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), 0,
                                              limits.connectionWindowBytes)
        flushTask = loop.makeDeferredTask { [unowned self] in
            if !connection.isClosed { flush() }
        }
    }

    deinit { nghttp2_session_del(session) }

    /// Everything the connection has read. False: the connection must close.
    func receive(_ bytes: UnsafeRawBufferPointer) -> Bool {
        inInput = true
        let consumed = nghttp2_session_mem_recv(session, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count)
        inInput = false
        if consumed < 0 { return false }
        runCollectedWork()
        flush()
        return true
    }

    /// Ends the calls whose deadline has passed; returns the next deadline.
    private func deadlinesPassed(_ now: UInt64) -> UInt64? {
        var next: UInt64?
        for stream in streams.values {
            guard let due = stream.deadline, !stream.isFinished else { continue }
            if due <= now {
                stream.deadline = nil
                stream.finish(GRPCStatus(.deadlineExceeded, "context deadline exceeded"))
                stream.call?.deliverClose()
            } else {
                next = min(next ?? due, due)
            }
        }
        return next
    }

    /// Calls the connection's streams' owners: the connection went away.
    func connectionLost() {
        for stream in streams.values {
            stream.isFinished = true
            if let call = stream.call {
                call.stream = nil
                closedCalls.append(call)
            }
        }
        streams.removeAll()
        held.removeAll()
        heldHead = 0
        unaryAnswerBytes = 0
        deadlineTimer.cancel()
        let calls = closedCalls
        closedCalls.removeAll()
        for c in calls { c.deliverClose() }
    }

    var isDone: Bool {
        nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0
    }

    // MARK: Receiving

    private func frameReceived(type: UInt8, flags: UInt8, streamID: Int32) {
        guard let stream = streams[streamID] else { return }
        let endStream = flags & UInt8(NGHTTP2_FLAG_END_STREAM.rawValue) != 0
        if stream.isRefused { return }
        if type == UInt8(NGHTTP2_HEADERS.rawValue) && !stream.dispatched && stream.grpcMethod == nil {
            enqueue(stream)  // route it once its headers are complete
        }
        if endStream { enqueue(stream) }
        if type == UInt8(NGHTTP2_DATA.rawValue) && !endStream && stream.grpcMethod?.kind == .bidirectionalStreaming {
            enqueue(stream)
        }
    }

    /// Resets a stream whose request the server will not serve; the rest
    /// of its header block is still decoded (HPACK's table depends on it).
    private func refuse(_ stream: HTTP2Stream, _ code: nghttp2_error_code) {
        stream.isRefused = true
        stream.ignoresInput = true
        stream.metadata = []
        nghttp2_submit_rst_stream(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), stream.id, code.rawValue)
        scheduleFlush()
    }

    /// Header bytes against a literal, without making Strings.
    private static func starts(_ a: UnsafeRawBufferPointer, with b: StaticString) -> Bool {
        a.count >= b.utf8CodeUnitCount
            && (b.utf8CodeUnitCount == 0 || memcmp(a.baseAddress!, b.utf8Start, b.utf8CodeUnitCount) == 0)
    }

    private static func equal(_ a: UnsafeRawBufferPointer, _ b: StaticString) -> Bool {
        a.count == b.utf8CodeUnitCount && starts(a, with: b)
    }

    /// RFC 9113 8.2: a lowercase token name (or a known pseudo-header), no
    /// connection-specific field, `te` only as "trailers", and a value
    /// without NUL, CR, LF or surrounding whitespace.
    static func isWellFormed(name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> Bool {
        guard let first = name.first else { return false }
        let n = name.bindMemory(to: UInt8.self), v = value.bindMemory(to: UInt8.self)
        guard nghttp2_check_header_value_rfc9113(v.baseAddress, v.count) != 0 else { return false }
        if first == UInt8(ascii: ":") {
            return equal(name, ":method") || equal(name, ":scheme") || equal(name, ":path")
                || equal(name, ":authority") || equal(name, ":protocol")
        }
        guard nghttp2_check_header_name(n.baseAddress, n.count) != 0 else { return false }
        if equal(name, "te") { return equal(value, "trailers") }
        return !(equal(name, "connection") || equal(name, "keep-alive") || equal(name, "proxy-connection")
                 || equal(name, "transfer-encoding") || equal(name, "upgrade"))
    }

    /// One request header. The headers every call sends are matched as
    /// bytes, and the path's String is reused while it repeats, so a call
    /// allocates no String for them.
    private func header(_ name: UnsafeRawBufferPointer, _ value: UnsafeRawBufferPointer, of stream: HTTP2Stream) {
        func string(_ b: UnsafeRawBufferPointer) -> String { String(decoding: b, as: UTF8.self) }
        if Self.equal(name, ":path") {
            let same = value.count == lastPath.bytes.count && (value.isEmpty
                || lastPath.bytes.withUnsafeBytes { memcmp($0.baseAddress!, value.baseAddress!, value.count) == 0 })
            if !same { lastPath = (Array(value), string(value)) }
            stream.path = lastPath.string
        } else if Self.equal(name, ":method") {
            stream.method = string(value)
        } else if Self.equal(name, "content-type") {
            stream.isGRPC = Self.starts(value, with: "application/grpc")
        } else if Self.equal(name, "grpc-timeout") {
            stream.timeout = parseGRPCTimeout(string(value))
        } else if Self.equal(name, "te") {
            // HTTP/2's own; not the call's metadata.
        } else if name.first != UInt8(ascii: ":") {
            stream.metadata.append((string(name), string(value)))
        }
    }
    private var lastPath: (bytes: [UInt8], string: String) = ([], "")

    private func dataReceived(streamID: Int32, _ bytes: UnsafeRawBufferPointer) {
        guard let stream = streams[streamID], !stream.ignoresInput else { return }
        stream.inbound.append(bytes)
        // A unary or server-streaming request is one message: more than the
        // largest allowed is refused as it arrives, not when the request
        // ends (a client that never ends it could fill the memory). Before
        // the stream is routed its kind is unknown, so a streaming call's
        // first messages get twice the room; a routed streaming call hands
        // over its messages as they complete (`process`).
        let oneMessage = GRPCFrame.headerSize + limits.maxReceiveMessageBytes
        let room: Int
        switch stream.grpcMethod?.kind {
        case .bidirectionalStreaming?: return
        case nil: room = 2 * oneMessage
        default: room = oneMessage
        }
        if stream.inbound.count > room {
            let declared = GRPCFrame.declaredLength(of: stream.inbound) ?? 0
            refuseTooLarge(stream, max(declared, stream.inbound.count - GRPCFrame.headerSize))
        }
    }

    /// Routes new streams, hands over complete messages, ends requests.
    private func runCollectedWork() {
        // The two lists trade places, so neither is reallocated per pass.
        swap(&working, &ready)
        for stream in working {
            stream.isQueued = false
            process(stream)
        }
        working.removeAll(keepingCapacity: true)
        notifyClosedAndWritable()
    }
    private var working: [HTTP2Stream] = []

    /// Lists a stream for the next `runCollectedWork`, once.
    private func enqueue(_ stream: HTTP2Stream) {
        guard !stream.isQueued else { return }
        stream.isQueued = true
        ready.append(stream)
    }

    private func process(_ stream: HTTP2Stream) {
        guard !stream.isFinished || stream.call != nil else { return }
        if stream.grpcMethod == nil && !stream.ignoresInput {
            guard stream.method == "POST", stream.isGRPC else {
                refuse(stream, httpStatus: "415")
                return
            }
            switch route(stream.path) {
            case .success(let m):
                stream.grpcMethod = m
                stream.call = GRPCCall(path: stream.path, metadata: stream.metadata, timeout: stream.timeout,
                                       peerCommonName: connection.peerCommonName, stream: stream, crossing: crossing)
                if let timeout = stream.timeout {
                    let due = deadline(after: timeout)
                    stream.deadline = due
                    deadlineTimer.arm(at: due)
                }
            case .failure(let status):
                stream.ignoresInput = true
                stream.finish(status)
                return
            case nil:
                // Not a method the service has: it says why, on its loop.
                stream.ignoresInput = true
                let call = GRPCCall(path: stream.path, metadata: stream.metadata, timeout: nil,
                                    peerCommonName: nil, stream: stream, crossing: crossing)
                stream.call = call
                call.start(Self.routedOnServiceLoop(.unary), [], router: router)
                return
            }
        }
        guard let method = stream.grpcMethod, let call = stream.call, !stream.ignoresInput else { return }
        let requestEnded = nghttp2_session_get_stream_remote_close(session, stream.id) != 0
        switch method.kind {
        case .unary, .serverStreaming:
            guard requestEnded, !stream.dispatched, !stream.isHeld else { return }
            if method.kind == .unary && (unaryAnswerBytes >= limits.unaryAnswerBytesPerConnection || heldHead < held.count) {
                stream.isHeld = true
                held.append(stream)
                return
            }
            dispatch(stream, method, call)
        case .bidirectionalStreaming:
            if !stream.dispatched {
                stream.dispatched = true
                call.start(method, [], router: router)
            }
            while !stream.isFinished {
                switch GRPCFrame.next(from: &stream.inbound, maxMessageBytes: limits.maxReceiveMessageBytes) {
                case .message(let m): call.deliverMessage(m); continue
                case .needMore: break
                case .compressed: stream.finish(GRPCStatus(.unimplemented, "grpc: compressed messages are not supported"))
                case .tooLarge(let n): refuseTooLarge(stream, n)
                }
                break
            }
            if requestEnded { call.deliverRequestEnd() }
        }
    }

    /// Hands a complete request (one message) to its call.
    private func dispatch(_ stream: HTTP2Stream, _ method: GRPCMethod, _ call: GRPCCall) {
        stream.dispatched = true
        switch GRPCFrame.next(from: &stream.inbound, maxMessageBytes: limits.maxReceiveMessageBytes) {
        case .message(let m): call.start(method, m, router: router)
        case .needMore: stream.finish(GRPCStatus(.internal, "grpc: request ended before a whole message"))
        case .compressed: stream.finish(GRPCStatus(.unimplemented, "grpc: compressed messages are not supported"))
        case .tooLarge(let n): refuseTooLarge(stream, n)
        }
    }

    /// The method for `path`. With the service on another loop, only its
    /// kind is known here (from the table taken when listening began): the
    /// call is routed on the service loop, which may still refuse it.
    /// nil: the path is not in that table.
    private func route(_ path: String) -> Result<GRPCMethod, GRPCStatus>? {
        guard crossing != nil else { return router.method(for: path) }
        guard let kind = methodKinds[path] else { return nil }
        return .success(Self.routedOnServiceLoop(kind))
    }

    /// A method known here by its kind only (`GRPCCall.start` finds the
    /// real one on the service loop). The three are shared by every I/O
    /// loop: immutable, and their handlers are never called.
    private static func routedOnServiceLoop(_ kind: GRPCMethodKind) -> GRPCMethod {
        switch kind {
        case .unary: return routedUnary
        case .serverStreaming: return routedServerStreaming
        case .bidirectionalStreaming: return routedBidirectional
        }
    }
    nonisolated(unsafe) private static let routedUnary = GRPCMethod(.unary) { _, _ in }
    nonisolated(unsafe) private static let routedServerStreaming = GRPCMethod(.serverStreaming) { _, _ in }
    nonisolated(unsafe) private static let routedBidirectional = GRPCMethod(.bidirectionalStreaming) { _, _ in }

    private func refuseTooLarge(_ stream: HTTP2Stream, _ length: Int) {
        stream.ignoresInput = true
        stream.inbound = ByteQueue()
        stream.finish(GRPCStatus(.resourceExhausted,
            "grpc: received message larger than max (\(length) vs. \(limits.maxReceiveMessageBytes))"))
    }

    private func refuse(_ stream: HTTP2Stream, httpStatus: String) {
        stream.ignoresInput = true
        stream.isFinished = true
        withHeaderVector([(":status", httpStatus)]) { nva, count in
            _ = nghttp2_submit_response(session, stream.id, nva, count, nil)
        }
        scheduleFlush()
    }

    private func notifyClosedAndWritable() {
        while !closedCalls.isEmpty || !writableCalls.isEmpty {
            let closed = closedCalls, writable = writableCalls
            closedCalls.removeAll()
            writableCalls.removeAll()
            for c in closed { c.deliverClose() }
            for c in writable where !(c.stream?.isFinished ?? true) { c.deliverWritable() }
        }
    }

    // MARK: Sending

    func submitResponseHeaders(_ stream: HTTP2Stream) {
        var provider = nghttp2_data_provider()
        provider.read_callback = { _, streamID, buffer, length, flags, _, user in
            guard let user, let buffer, let flags else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
            let s = Unmanaged<HTTP2ServerSession>.fromOpaque(user).takeUnretainedValue()
            return s.produceData(streamID: streamID, into: buffer, max: length, flags: flags)
        }
        StaticHeaderVector.grpcResponse.withVector { nva, count in
            _ = nghttp2_submit_response(session, stream.id, nva, count, &provider)
        }
    }

    func submitTrailersOnly(_ stream: HTTP2Stream, _ status: GRPCStatus) {
        var headers = [(":status", "200"), ("content-type", "application/grpc"),
                       ("grpc-status", String(status.code.rawValue))]
        if !status.message.isEmpty { headers.append(("grpc-message", percentEncodeGRPCMessage(status.message))) }
        withHeaderVector(headers) { nva, count in
            _ = nghttp2_submit_response(session, stream.id, nva, count, nil)
        }
        scheduleFlush()
    }

    private func submitTrailers(_ stream: HTTP2Stream, _ status: GRPCStatus) {
        if status.code == .ok && status.message.isEmpty {
            StaticHeaderVector.grpcOK.withVector { nva, count in
                _ = nghttp2_submit_trailer(session, stream.id, nva, count)
            }
            return
        }
        var headers = [("grpc-status", String(status.code.rawValue))]
        if !status.message.isEmpty { headers.append(("grpc-message", percentEncodeGRPCMessage(status.message))) }
        withHeaderVector(headers) { nva, count in
            _ = nghttp2_submit_trailer(session, stream.id, nva, count)
        }
    }

    /// nghttp2 asks how much of a stream's response goes in its next DATA
    /// frame, as flow control allows. The bytes stay queued: nghttp2 hands
    /// the frame to `sendData` (NO_COPY), which writes them from the queue
    /// straight into the connection's output, instead of copying them into
    /// nghttp2's frame buffer first.
    private func produceData(streamID: Int32, into _: UnsafeMutablePointer<UInt8>, max: Int,
                             flags: UnsafeMutablePointer<UInt32>) -> Int {
        guard let stream = streams[streamID] else { return Int(NGHTTP2_ERR_CALLBACK_FAILURE.rawValue) }
        let n = min(max, stream.outbound.count)
        if n > 0 { flags.pointee |= NGHTTP2_DATA_FLAG_NO_COPY.rawValue }
        if n == stream.outbound.count, let status = stream.finalStatus {
            flags.pointee |= NGHTTP2_DATA_FLAG_EOF.rawValue | NGHTTP2_DATA_FLAG_NO_END_STREAM.rawValue
            submitTrailers(stream, status)
            return n
        }
        if n == 0 {
            stream.isDeferred = true
            return Int(NGHTTP2_ERR_DEFERRED.rawValue)
        }
        return n
    }

    /// Writes a DATA frame that `produceData` sized: its 9-byte header,
    /// then that many bytes off the front of the stream's queue. While the
    /// connection's output is over its bound the frame waits (WOULDBLOCK:
    /// nghttp2 offers it again on the next flush).
    private func sendData(streamID: Int32, frameHeader: UnsafePointer<UInt8>, length: Int) -> Int32 {
        guard let stream = streams[streamID], stream.outbound.count >= length else {
            return Int32(NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE.rawValue)
        }
        if connection.outputBytes >= limits.outputBufferBytes { return Int32(NGHTTP2_ERR_WOULDBLOCK.rawValue) }
        let before = stream.outbound.count
        connection.write(UnsafeRawBufferPointer(start: frameHeader, count: 9))
        stream.outbound.write(length) { connection.write($0) }
        if stream.isUnary { unaryAnswerBytes -= length }
        stream.call?.drained(length)
        if before >= GRPCCall.lowWaterBytes && stream.outbound.count < GRPCCall.lowWaterBytes, let call = stream.call {
            writableCalls.append(call)
        }
        return 0
    }

    /// Flushes after the input being processed, or after the current
    /// callbacks.
    func scheduleFlush() {
        if inInput { flushWanted = true } else { flushTask?.trigger() }
    }

    /// Moves what nghttp2 has to send into the connection's output, while
    /// the output stays under its bound (a slow reader stops the flow here,
    /// and `flush()` runs again when the socket drains).
    func flush() {
        flushWanted = false
        while connection.outputBytes < limits.outputBufferBytes {
            var data: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &data)
            if n <= 0 { break }
            connection.write(UnsafeRawBufferPointer(start: data, count: n))
        }
        notifyClosedAndWritable()
        if heldHead < held.count && unaryAnswerBytes < limits.unaryAnswerBytesPerConnection {
            releaseHeld()
            return
        }
        if connection.outputBytes == 0 && isDone { connection.closeWhenFlushed() }
    }

    /// Dispatches held calls, oldest first, while the answers waiting stay
    /// under their bound; then flushes what they answered.
    private func releaseHeld() {
        while heldHead < held.count && unaryAnswerBytes < limits.unaryAnswerBytesPerConnection {
            let stream = held[heldHead]
            heldHead += 1
            stream.isHeld = false
            // A stream reset, or past its deadline, while it waited is done.
            if streams[stream.id] === stream, !stream.isFinished, let method = stream.grpcMethod, let call = stream.call {
                dispatch(stream, method, call)
            }
        }
        if heldHead == held.count {
            held.removeAll(keepingCapacity: held.count <= 64)
            heldHead = 0
        }
        notifyClosedAndWritable()
        scheduleFlush()
    }
}
