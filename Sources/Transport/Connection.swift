import CLibevent
import COpenSSL
#if canImport(Glibc)
import Glibc
#endif

/// One accepted client connection. It first looks at the opening bytes:
/// the HTTP/2 client preface makes it an HTTP/2 (gRPC) connection, an
/// HTTP/1.x request line an HTTP/1.1 one (etcd serves both on one port), and
/// anything else is dropped.
final class Connection {
    private var bev: OpaquePointer?
    private unowned let server: TransportServer
    /// The loop this connection is served on (its thread is the only one
    /// that touches it).
    private let home: ConnectionHome
    let id: Int

    private enum Mode {
        case sniffing
        case http2(HTTP2ServerSession)
        case http1
    }
    private var mode = Mode.sniffing
    private var closeAfterFlush = false
    /// The HTTP/1.1 request being answered; later ones wait in the input.
    private var exchange: HTTP1Exchange?
    private(set) var isClosed = false
    /// The subject CN of the client's verified TLS certificate, once the
    /// handshake is done (etcd takes it as the user when no token is given).
    private(set) var peerCommonName: String?

    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    init(bev: OpaquePointer, server: TransportServer, home: ConnectionHome, id: Int) {
        self.bev = bev
        self.server = server
        self.home = home
        self.id = id
        let me = Unmanaged.passUnretained(self).toOpaque()
        bufferevent_setcb(bev, { _, arg in
            Unmanaged<Connection>.fromOpaque(arg!).takeUnretainedValue().readable()
        }, { _, arg in
            Unmanaged<Connection>.fromOpaque(arg!).takeUnretainedValue().writable()
        }, { _, events, arg in
            Unmanaged<Connection>.fromOpaque(arg!).takeUnretainedValue().event(events)
        }, me)
        // The write callback runs when the output drains to a quarter of its
        // bound: time to produce more.
        bufferevent_setwatermark(bev, Int16(EV_WRITE), server.limits.outputBufferBytes / 4, 0)
        if bufferevent_openssl_get_ssl(bev) == nil {
            output = DirectOutput(bev: bev, loop: home.loop) { [unowned self] in writable() }
            // (A new bufferevent has writing enabled.)
            bufferevent_disable(bev, Int16(EV_WRITE))
            bufferevent_enable(bev, Int16(EV_READ))
        } else {
            bufferevent_enable(bev, Int16(EV_READ | EV_WRITE))
        }
    }

    /// Plaintext output, written at the end of the iteration that queued it.
    private var output: DirectOutput?

    var outputBytes: Int {
        guard let bev else { return 0 }
        return evbuffer_get_length(bufferevent_get_output(bev))
    }

    func write(_ bytes: UnsafeRawBufferPointer) {
        guard let bev, bytes.count > 0 else { return }
        bufferevent_write(bev, bytes.baseAddress, bytes.count)
        output?.queued()
    }

    func closeWhenFlushed() {
        closeAfterFlush = true
        if outputBytes == 0 { close() }
    }

    // MARK: Callbacks

    private func readable() {
        guard let bev else { return }
        let input = bufferevent_get_input(bev)
        if case .sniffing = mode {
            let n = evbuffer_get_length(input)
            let peek = min(n, Self.preface.count)
            var first = [UInt8](repeating: 0, count: peek)
            evbuffer_copyout(input, &first, peek)
            if first == Array(Self.preface.prefix(peek)) {
                guard peek == Self.preface.count else { return }  // wait for the whole preface
                mode = .http2(HTTP2ServerSession(connection: self, loop: home.loop, router: server.router, limits: server.limits,
                                                crossing: home.crossing, methodKinds: server.methodKinds))
            } else if Self.looksLikeHTTP1(first) {
                mode = .http1
            } else {
                server.log(.debug, "dropping a connection that speaks neither HTTP/2 nor HTTP/1.1")
                close()
                return
            }
        }
        switch mode {
        case .sniffing: return
        case .http2(let session):
            // Feed nghttp2 the input as it lies in the buffer's chunks.
            let bufferedBytes = evbuffer_get_length(input)
            var ok = true
            while ok && evbuffer_get_length(input) > 0 && !isClosed {
                var vec = iovec()
                guard evbuffer_peek(input, -1, nil, &vec, 1) > 0 else { break }
                ok = session.receive(UnsafeRawBufferPointer(start: vec.iov_base, count: vec.iov_len))
                evbuffer_drain(input, vec.iov_len)
            }
            if ok && output != nil && bufferedBytes >= DirectInput.bufferEventReadCap && !isClosed {
                home.loop.directInput.read(from: bufferevent_getfd(bev)) { chunk in
                    ok = session.receive(chunk)
                    return ok && !isClosed
                }
            }
            if !ok {
                session.flush()  // a GOAWAY, if nghttp2 queued one
                closeWhenFlushed()
                return
            }
        case .http1:
            if let input { serveHTTP1(input) }
        }
    }

    static func looksLikeHTTP1(_ first: [UInt8]) -> Bool {
        // A method token (upper-case letters) followed by a space.
        guard let space = first.firstIndex(of: 0x20) else {
            return !first.isEmpty && first.allSatisfy { $0 >= 0x41 && $0 <= 0x5a }
        }
        return space > 0 && first[..<space].allSatisfy { $0 >= 0x41 && $0 <= 0x5a }
    }

    private func serveHTTP1(_ input: OpaquePointer) {
        while !closeAfterFlush && !isClosed && exchange == nil {
            let n = evbuffer_get_length(input)
            guard n > 0, let data = evbuffer_pullup(input, -1) else { return }
            switch HTTP1Parser.parse(UnsafeRawBufferPointer(start: data, count: n), limits: server.limits) {
            case .needMore:
                return
            case .bad(let status):
                let r = HTTP1Response(status: status, text: HTTP1Parser.reason(status) + "\n")
                let bytes = HTTP1Parser.serialize(r, keepAlive: false, version: "HTTP/1.1")
                bytes.withUnsafeBytes { write($0) }
                closeWhenFlushed()
                return
            case .request(let request, let consumed):
                evbuffer_drain(input, consumed)
                let current = HTTP1Exchange(connection: self, keepAlive: HTTP1Parser.wantsKeepAlive(request),
                                            version: request.version, crossing: home.crossing)
                exchange = current
                if let crossing = home.crossing {
                    let handler = server.http1
                    crossing.toService.post { handler.handle(request, current) }
                } else {
                    server.http1.handle(request, current)
                }
            }
        }
    }

    /// An exchange's last bytes: written, then the next request is read
    /// (or the connection closes, without keep-alive).
    func finishExchange(_ finished: HTTP1Exchange, _ bytes: [UInt8]) {
        guard exchange === finished, !isClosed else { return }
        bytes.withUnsafeBytes { write($0) }
        exchange = nil
        finished.connectionWrote(bytes.count, outputBytes: outputBytes)
        if !finished.keepAlive {
            closeWhenFlushed()
        } else if let bev {
            serveHTTP1(bufferevent_get_input(bev))
        }
    }

    private func writable() {
        output?.drained()
        if case .http2(let session) = mode { session.flush() }
        exchange?.deliverWritable(outputBytes: outputBytes)
        if closeAfterFlush && outputBytes == 0 { close() }
    }

    private func event(_ events: Int16) {
        if events & Int16(BEV_EVENT_CONNECTED) != 0, let bev {
            // A TLS handshake finished: the connection may now idle (watch
            // streams do) without its handshake deadline.
            bufferevent_set_timeouts(bev, nil, nil)
            if let ssl = bufferevent_openssl_get_ssl(bev) {
                var name = [CChar](repeating: 0, count: 256)
                if swetcd_verified_peer_common_name(ssl, &name, Int32(name.count)) > 0 {
                    peerCommonName = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                }
            }
        }
        if events & Int16(BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT) != 0 { close() }
    }

    /// Closes the connection unless its TLS handshake ends within `seconds`.
    func limitHandshake(to seconds: Double) {
        guard let bev else { return }
        var limit = timeval(tv_sec: Int(seconds), tv_usec: Int((seconds - seconds.rounded(.down)) * 1e6))
        bufferevent_set_timeouts(bev, &limit, &limit)
    }

    /// Frees the socket and tells the calls on it; the server lets go of this
    /// object last, so nothing here may run after that.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        output?.detach()
        if let bev { bufferevent_free(bev) }
        bev = nil
        server.openConnections.subtract(1, ordering: .relaxed)
        if case .http2(let session) = mode {
            mode = .http1  // drop the session after telling its calls
            session.connectionLost()
        }
        if let open = exchange {
            exchange = nil
            open.deliverClose()
        }
        home.connectionClosed(self)
    }
}
