import Synchronization

/// One gRPC call on an HTTP/2 stream, as the service sees it. The service
/// uses it on the service loop's thread. Answering a call whose client has
/// gone is harmless: it does nothing.
///
/// When the connection is served by an I/O loop (`crossing` set), the
/// stream lives on that loop: what the service does to the call is posted
/// there, and what the stream reports (messages, end, close, room to
/// write) is posted to the service loop, each direction in order.
public final class GRPCCall {
    /// The request path, `/package.Service/Method`.
    public let path: String
    /// Request metadata (headers other than pseudo-headers), lower-cased names.
    public let metadata: [(name: String, value: String)]
    /// Seconds the client allows (from `grpc-timeout`), if it set a deadline.
    public let timeout: Double?
    /// The subject CN of the client's verified TLS certificate, if any.
    public let peerCommonName: String?

    /// The stream while it is open. Strong, not weak (a weak reference costs
    /// an allocation per call): the session clears it when the stream
    /// closes, which ends the stream <-> call cycle.
    var stream: HTTP2Stream?

    /// Further request messages (bidirectional streams).
    public var onMessage: (([UInt8]) -> Void)?
    /// The client half-closed its side (no more messages).
    public var onRequestEnd: (() -> Void)?
    /// The stream is gone (finished, reset, or connection lost).
    public var onClose: (() -> Void)?
    /// Queued response bytes fell below `lowWaterBytes`: room for more.
    public var onWritable: (() -> Void)?

    /// Where this call's messages are counted (the service sets it when the
    /// call starts; service loop only).
    public var messageCounts: GRPCMessageCounts?
    /// When the service started the call (set only when something times
    /// calls: --metrics extensive).
    public var startedNanoseconds: UInt64 = 0

    /// Below this many queued response bytes, `onWritable` is called.
    public static let lowWaterBytes = 256 << 10

    /// The way to and from the I/O loop that serves the stream, if that is
    /// not the service loop.
    let crossing: LoopCrossing?
    /// Service side of a crossing call: bytes sent, and whether it finished.
    private var sentBytes = 0
    private var finishedByService = false
    /// I/O side of a crossing call: bytes taken by HTTP/2 flow control, and
    /// whether the stream has closed.
    let drainedBytes = Atomic<Int>(0)
    private let streamClosed = Atomic<Bool>(false)

    init(path: String, metadata: [(name: String, value: String)], timeout: Double?, peerCommonName: String?,
         stream: HTTP2Stream, crossing: LoopCrossing?) {
        self.path = path
        self.metadata = metadata
        self.timeout = timeout
        self.peerCommonName = peerCommonName
        self.stream = stream
        self.crossing = crossing
    }

    /// What an in-process call (the JSON gateway's) hears instead of a
    /// stream: each response message, then the status.
    public enum Event {
        case message([UInt8])
        case finished(GRPCStatus)
    }
    private var sink: ((Event) -> Void)?
    private var sinkFinished = false
    /// An in-process call's bytes waiting to reach its client (the gateway
    /// sets it), so a slow reader backs the call up as a stream would.
    public var queuedBytesInProcess: (() -> Int)?

    /// A call made in-process: its answers go to `sink`, on the loop.
    public init(path: String, metadata: [(name: String, value: String)], sink: @escaping (Event) -> Void) {
        self.path = path
        self.metadata = metadata
        timeout = nil
        peerCommonName = nil
        self.sink = sink
        crossing = nil
    }

    /// An in-process call's caller went away (its onClose runs).
    public func cancelInProcess() {
        guard sink != nil, !sinkFinished else { return }
        sinkFinished = true
        sink = nil
        onClose?()
    }

    public func metadata(_ name: String) -> String? {
        metadata.first { $0.name == name }?.value
    }

    /// True once the call is finished or its stream is gone.
    public var isClosed: Bool {
        if sink != nil { return sinkFinished }
        if crossing != nil { return finishedByService || streamClosed.load(ordering: .acquiring) }
        return stream?.isFinished ?? true
    }

    /// Response bytes queued and not yet taken by HTTP/2 flow control.
    public var queuedBytes: Int {
        if let queued = queuedBytesInProcess { return queued() }
        if crossing != nil { return sentBytes - drainedBytes.load(ordering: .relaxed) }
        return stream?.outbound.count ?? 0
    }

    /// Unary answer: the message, then status OK.
    public func respond(_ message: [UInt8]) {
        send(message)
        finish(.ok)
    }

    /// Unary answer from a buffer with room for the prefix (no copy).
    public func respond(_ message: GRPCMessageBuffer) {
        if let crossing, sink == nil {
            // One crossing for both.
            guard !finishedByService else { return }
            finishedByService = true
            messageCounts?.sent(1, bytes: message.storage.count - GRPCFrame.headerSize)
            crossing.toIO.post { [self] in
                stream?.send(message)
                stream?.finish(.ok)
            }
            return
        }
        send(message)
        finish(.ok)
    }

    /// Sends one response message (streams: any number of times).
    public func send(_ message: [UInt8]) {
        messageCounts?.sent(1, bytes: message.count)
        if let sink {
            if !sinkFinished { sink(.message(message)) }
            return
        }
        if let crossing {
            guard counted(GRPCFrame.headerSize + message.count) else { return }
            crossing.toIO.post { [self] in stream?.send(message) }
            return
        }
        stream?.send(message)
    }

    /// A crossing call's message is counted as queued, unless the service
    /// has finished the call (then it is not sent).
    private func counted(_ framedBytes: Int) -> Bool {
        guard !finishedByService else { return false }
        sentBytes += framedBytes
        return true
    }

    /// Sends one response message put together from shared parts.
    public func send(_ message: MessageParts) {
        if sink != nil { return send(message.bytes) }
        messageCounts?.sent(1, bytes: message.count)
        if let crossing {
            guard counted(GRPCFrame.headerSize + message.count) else { return }
            crossing.toIO.postSend(message, on: self)
            return
        }
        stream?.send(message)
    }

    /// Sends `message` once per value of its varint field, in order, as
    /// that many `send(_:)` calls would: the watch fan-out's messages to a
    /// stream's watchers of one event differ only in the watch ID, and the
    /// stream is reached once for all of them.
    public func send(_ message: MessageParts, withEachValue values: [UInt64]) {
        if values.count == 1 || sink != nil {
            var one = message
            for value in values {
                one.value = value
                send(one)
            }
            return
        }
        // The frames' size, known once they are sized anyway: on the I/O
        // loop's side here, by framing them otherwise.
        if let crossing {
            let framed = message.framedBytes(withEachValue: values)
            messageCounts?.sent(values.count, bytes: framed - values.count * GRPCFrame.headerSize)
            guard counted(framed) else { return }
            crossing.toIO.postSend(message, withEachValue: values, on: self)
            return
        }
        let framed = stream?.send(message, withEachValue: values) ?? 0
        if framed > 0 { messageCounts?.sent(values.count, bytes: framed - values.count * GRPCFrame.headerSize) }
    }

    public func send(_ message: GRPCMessageBuffer) {
        if sink != nil { return send(message.message) }
        messageCounts?.sent(1, bytes: message.storage.count - GRPCFrame.headerSize)
        if let crossing {
            guard counted(message.storage.count) else { return }
            crossing.toIO.post { [self] in stream?.send(message) }
            return
        }
        stream?.send(message)
    }

    /// Ends the call with `status` in the trailers.
    public func finish(_ status: GRPCStatus) {
        if let sink {
            guard !sinkFinished else { return }
            sinkFinished = true
            sink(.finished(status))
            self.sink = nil
            return
        }
        if let crossing {
            guard !finishedByService else { return }
            finishedByService = true
            crossing.toIO.post { [self] in stream?.finish(status) }
            return
        }
        stream?.finish(status)
    }

    // MARK: What the stream reports (called on the I/O loop)

    // Each either runs now (no crossing) or is posted to the service loop;
    // spelled out so that a call served on the service loop allocates no
    // closure for it.

    /// Hands the call to its method; across loops, the method is looked
    /// up on the service loop (which may still refuse the call).
    func start(_ method: GRPCMethod, _ message: [UInt8], router: GRPCRouter) {
        guard let crossing else { return method.handler(self, message) }
        crossing.toService.post { [self] in
            switch router.method(for: path) {
            case .success(let m): m.handler(self, message)
            case .failure(let status): finish(status)
            }
        }
    }

    func deliverMessage(_ message: [UInt8]) {
        guard let crossing else { return delivered(message) }
        crossing.toService.post { [self] in delivered(message) }
    }

    private func delivered(_ message: [UInt8]) {
        messageCounts?.received(bytes: message.count)
        onMessage?(message)
    }

    func deliverRequestEnd() {
        guard let crossing else { return onRequestEnd?() ?? () }
        crossing.toService.post { [self] in onRequestEnd?() }
    }

    func deliverClose() {
        guard let crossing else { return onClose?() ?? () }
        streamClosed.store(true, ordering: .releasing)
        crossing.toService.post { [self] in onClose?() }
    }

    func deliverWritable() {
        guard let crossing else { return onWritable?() ?? () }
        crossing.toService.post { [self] in if !isClosed { onWritable?() } }
    }

    /// The stream took `n` bytes of this call's response for sending.
    func drained(_ n: Int) {
        if crossing != nil { drainedBytes.add(n, ordering: .relaxed) }
    }
}
