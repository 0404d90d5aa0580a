/// One gRPC call on an HTTP/2 stream, as the service sees it. All of it is
/// used on the loop thread. Answering a call whose client has gone is
/// harmless: it does nothing.
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

    /// Below this many queued response bytes, `onWritable` is called.
    public static let lowWaterBytes = 256 << 10

    init(path: String, metadata: [(name: String, value: String)], timeout: Double?, peerCommonName: String?, stream: HTTP2Stream) {
        self.path = path
        self.metadata = metadata
        self.timeout = timeout
        self.peerCommonName = peerCommonName
        self.stream = stream
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
        return stream?.isFinished ?? true
    }

    /// Response bytes queued and not yet taken by HTTP/2 flow control.
    public var queuedBytes: Int {
        if let queued = queuedBytesInProcess { return queued() }
        return stream?.outbound.count ?? 0
    }

    /// Unary answer: the message, then status OK.
    public func respond(_ message: [UInt8]) {
        send(message)
        finish(.ok)
    }

    /// Unary answer from a buffer with room for the prefix (no copy).
    public func respond(_ message: GRPCMessageBuffer) {
        send(message)
        finish(.ok)
    }

    /// Sends one response message (streams: any number of times).
    public func send(_ message: [UInt8]) {
        if let sink {
            if !sinkFinished { sink(.message(message)) }
            return
        }
        stream?.send(message)
    }

    public func send(_ message: GRPCMessageBuffer) {
        if sink != nil { return send(message.message) }
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
        stream?.finish(status)
    }
}
