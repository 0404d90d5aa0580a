/// The transport's bounds, in one place.
public struct TransportLimits: Sendable {
    /// Largest gRPC message accepted; larger ones end the call with
    /// RESOURCE_EXHAUSTED (etcd: --max-request-bytes plus 512 KiB).
    public var maxReceiveMessageBytes = 1_572_864 + 512 * 1024
    /// Largest HTTP/1.1 request body accepted.
    public var maxHTTP1BodyBytes = 1_572_864 + 512 * 1024
    /// Largest HTTP/1.1 request head (request line and headers).
    public var maxHTTP1HeadBytes = 64 * 1024
    /// Bytes a connection may have waiting for the socket before the server
    /// stops producing more for it.
    public var outputBufferBytes = 1 << 20
    public var maxConcurrentStreams: UInt32 = 4096
    /// Bytes of unary answers an HTTP/2 connection may have waiting for its
    /// client to read them; past it, further complete requests wait
    /// undispatched (one answer may go past it: a Range larger than this
    /// is still served).
    public var unaryAnswerBytesPerConnection = 4 << 20
    /// Largest request header list (names, values and 32 bytes each, as
    /// HTTP/2 counts it); a larger one resets its stream. Advertised in
    /// SETTINGS, so a conforming client refuses to send one.
    public var maxHeaderListBytes: UInt32 = 64 * 1024
    /// HTTP/2 flow-control windows the server grants its clients.
    public var streamWindowBytes: UInt32 = 1 << 20
    public var connectionWindowBytes: Int32 = 1 << 24
    /// Seconds a TLS client has to finish its handshake; then the
    /// connection is closed (a half-done handshake would hold it forever).
    public var tlsHandshakeSeconds: Double = 10
    /// Connections open at once; past it accepting pauses. Set below the
    /// descriptor limit, so that the store (WAL segments, snapshots) and
    /// peers still find descriptors when clients hold all they may.
    public var maxConnections = Int.max

    /// The connections a process whose descriptor limit is `openFiles` may
    /// hold: all but 128 kept for the rest, and at least half of them.
    public static func connections(forOpenFiles openFiles: Int) -> Int {
        max(openFiles - min(128, openFiles / 2), 1)
    }

    public init() {}
}
