import EtcdProto
import EtcdStatus
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
    /// A user and password to authenticate with, as etcd's clientv3 does:
    /// Authenticate before the first call, send the token with every call,
    /// authenticate again when the server calls the token invalid.
    let credentials: (user: String, password: String)?
    private var auth = AuthState.unknown
    /// Seconds an Authenticate may take.
    let authTimeout: Double

    private enum AuthState {
        /// No token yet (or it went stale).
        case unknown
        /// Calls waiting for the Authenticate in flight.
        case authenticating([(GRPCStatus?) -> Void])
        /// Sent as `token` metadata; nil: none needed (no credentials, or
        /// the server has auth disabled).
        case ready(token: String?)
    }

    init(loop: EventLoop, endpoints: [(host: String, port: UInt16)], size: Int, tls: TLSClientContext? = nil,
         credentials: (user: String, password: String)? = nil, authTimeout: Double = 5) {
        self.loop = loop
        self.endpoints = endpoints
        self.tls = tls
        self.credentials = credentials
        self.authTimeout = authTimeout
        if credentials == nil { auth = .ready(token: nil) }
        slots = (0..<max(size, 1)).map { Slot(endpoint: $0 % endpoints.count) }
    }

    /// Starts a call on the next connection (or on `slot`), failing over to
    /// other endpoints while connections cannot be established.
    func call(_ path: String, request: [UInt8], timeout: Double?, onMessage: (([UInt8]) -> Void)? = nil,
              slot: Int? = nil, attemptsLeft: Int? = nil, authRetried: Bool = false,
              completion: @escaping (GRPCClientResult) -> Void) {
        guard case .ready(let token) = auth else {
            whenAuthenticated { [weak self] failure in
                if let failure { return completion(.failure(failure)) }
                self?.call(path, request: request, timeout: timeout, onMessage: onMessage, slot: slot,
                           attemptsLeft: attemptsLeft, authRetried: authRetried, completion: completion)
            }
            return
        }
        let attempts = attemptsLeft ?? endpoints.count
        let index: Int
        if let slot {
            index = slot % slots.count
        } else {
            index = next
            next = (next + 1) % slots.count
        }
        let connection = self.connection(at: index)
        connection.call(path, request: request, timeout: timeout, metadata: Self.metadata(token),
                        onMessage: onMessage) { [weak self] result in
            if case .failure(let status) = result, let self {
                if status.code == .unavailable, !connection.wasConnected, attempts > 1 {
                    // Never reached the server: safe to send elsewhere.
                    self.call(path, request: request, timeout: timeout, onMessage: onMessage,
                              attemptsLeft: attempts - 1, authRetried: authRetried, completion: completion)
                    return
                }
                if Self.isInvalidToken(status), !authRetried, self.credentials != nil {
                    // The token died (its TTL, a restart, a password change): once more with a new one.
                    if case .ready(let current) = self.auth, current == token { self.auth = .unknown }
                    self.call(path, request: request, timeout: timeout, onMessage: onMessage, slot: slot,
                              attemptsLeft: attemptsLeft, authRetried: true, completion: completion)
                    return
                }
            }
            completion(result)
        }
    }

    /// Opens a stream that keeps sending (Watch), once authenticated:
    /// `opened` gets the connection it is on and its stream id, for later
    /// `send`, `closeSend` and `cancel`, or the failure to authenticate.
    func openStream(_ path: String, first: [UInt8], onMessage: @escaping ([UInt8]) -> Void,
                    completion: @escaping (GRPCClientResult) -> Void,
                    opened: @escaping (Result<(HTTP2ClientConnection, Int32), GRPCStatus>) -> Void) {
        guard case .ready(let token) = auth else {
            whenAuthenticated { [weak self] failure in
                if let failure { return opened(.failure(failure)) }
                self?.openStream(path, first: first, onMessage: onMessage, completion: completion, opened: opened)
            }
            return
        }
        let index = next
        next = (next + 1) % slots.count
        let connection = self.connection(at: index)
        let id = connection.call(path, request: first, timeout: nil, metadata: Self.metadata(token), onMessage: onMessage,
                                 keepSending: true, completion: completion)
        opened(.success((connection, id)))
    }

    static func metadata(_ token: String?) -> [(String, String)] {
        token.map { [("token", $0)] } ?? []
    }

    static func isInvalidToken(_ status: GRPCStatus) -> Bool {
        status.code == .unauthenticated && status.message == EtcdMessage.invalidAuthToken
    }

    /// Runs `then` once a token is at hand (nil) or authenticating failed
    /// (its status); one Authenticate serves every call waiting meanwhile.
    private func whenAuthenticated(_ then: @escaping (GRPCStatus?) -> Void) {
        switch auth {
        case .ready:
            then(nil)
        case .authenticating(let waiting):
            auth = .authenticating(waiting + [then])
        case .unknown:
            guard let credentials else { auth = .ready(token: nil); return then(nil) }
            auth = .authenticating([then])
            var request = Etcdserverpb_AuthenticateRequest()
            request.name = credentials.user
            request.password = credentials.password
            let bytes: [UInt8] = (try? request.serializedBytes()) ?? []
            let index = next
            next = (next + 1) % slots.count
            connection(at: index).call("/etcdserverpb.Auth/Authenticate", request: bytes, timeout: authTimeout) { [weak self] result in
                guard let self, case .authenticating(let waiting) = self.auth else { return }
                var failure: GRPCStatus?
                switch result {
                case .success(let messages):
                    if let r = try? Etcdserverpb_AuthenticateResponse(serializedBytes: messages.first ?? []) {
                        self.auth = .ready(token: r.token)
                    } else {
                        failure = GRPCStatus(.internal, "cannot decode the Authenticate response")
                    }
                case .failure(let status) where status.message == EtcdMessage.authNotEnabled:
                    self.auth = .ready(token: nil)  // as clientv3: go on without a token
                case .failure(let status):
                    failure = status
                }
                if failure != nil { self.auth = .unknown }
                for w in waiting { w(failure) }
            }
        }
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
