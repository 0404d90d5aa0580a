import Transport

/// The client's connections, on the client's loop thread: `size`
/// connections spread over the endpoints, calls handed out round-robin.
/// A connection that cannot be established moves its slot to the next
/// endpoint, and the calls it carried (never sent) are retried there.
final class ConnectionPool {
    let loop: EventLoop
    let endpoints: [(host: String, port: UInt16)]
    private var slots: [Slot]
    private var next = 0

    struct Slot {
        var endpoint: Int
        var connection: HTTP2ClientConnection?
    }

    /// TLS for every connection; nil: h2c.
    let tls: TLSClientContext?

    init(loop: EventLoop, endpoints: [(host: String, port: UInt16)], size: Int, tls: TLSClientContext? = nil) {
        self.loop = loop
        self.endpoints = endpoints
        self.tls = tls
        slots = (0..<max(size, 1)).map { Slot(endpoint: $0 % endpoints.count) }
    }

    /// Starts a call on the next connection (or on `slot`), failing over to
    /// other endpoints while connections cannot be established.
    func call(_ path: String, request: [UInt8], timeout: Double?, onMessage: (([UInt8]) -> Void)? = nil,
              slot: Int? = nil, attemptsLeft: Int? = nil, completion: @escaping (GRPCClientResult) -> Void) {
        let attempts = attemptsLeft ?? endpoints.count
        let index: Int
        if let slot {
            index = slot % slots.count
        } else {
            index = next
            next = (next + 1) % slots.count
        }
        let connection = self.connection(at: index)
        connection.call(path, request: request, timeout: timeout, onMessage: onMessage) { [weak self] result in
            if case .failure(let status) = result, status.code == .unavailable, !connection.wasConnected,
               attempts > 1, let self {
                // Never reached the server: safe to send elsewhere.
                self.call(path, request: request, timeout: timeout, onMessage: onMessage,
                          attemptsLeft: attempts - 1, completion: completion)
                return
            }
            completion(result)
        }
    }

    /// Opens a stream that keeps sending (Watch): the connection it is on
    /// and its stream id, for later `send`, `closeSend` and `cancel`.
    func openStream(_ path: String, first: [UInt8], onMessage: @escaping ([UInt8]) -> Void,
                    completion: @escaping (GRPCClientResult) -> Void) -> (HTTP2ClientConnection, Int32) {
        let index = next
        next = (next + 1) % slots.count
        let connection = self.connection(at: index)
        let id = connection.call(path, request: first, timeout: nil, onMessage: onMessage, keepSending: true,
                                 completion: completion)
        return (connection, id)
    }

    private func connection(at index: Int) -> HTTP2ClientConnection {
        if let c = slots[index].connection, !c.isClosed { return c }
        if let old = slots[index].connection, !old.wasConnected {
            slots[index].endpoint = (slots[index].endpoint + 1) % endpoints.count
        }
        let e = endpoints[slots[index].endpoint]
        let c = HTTP2ClientConnection(loop: loop, host: e.host, port: e.port, tls: tls)
        slots[index].connection = c
        return c
    }

    func closeAll() {
        for s in slots { s.connection?.close() }
        slots = slots.map { Slot(endpoint: $0.endpoint) }
    }
}
