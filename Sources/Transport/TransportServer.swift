import CLibevent
import Logging
#if canImport(Glibc)
import Glibc
#endif

/// Listens on client URLs and serves gRPC (HTTP/2) and HTTP/1.1 on each,
/// on one event loop.
public final class TransportServer {
    public let loop: EventLoop
    let router: GRPCRouter
    let http1: HTTP1Handler
    let limits: TransportLimits
    let logger: Logger
    private var listeners: [Listener] = []

    /// One listening socket, and the TLS its connections start with (nil:
    /// plaintext).
    private final class Listener {
        unowned let server: TransportServer
        let tls: TLSServerContext?
        var handle: OpaquePointer?
        init(server: TransportServer, tls: TLSServerContext?) {
            self.server = server
            self.tls = tls
        }
    }
    private var connections: [Int: Connection] = [:]
    private var nextConnectionID = 0

    public init(loop: EventLoop, router: GRPCRouter, http1: HTTP1Handler,
                limits: TransportLimits = TransportLimits(), logger: Logger) {
        self.loop = loop
        self.router = router
        self.http1 = http1
        self.limits = limits
        self.logger = logger
    }

    deinit {
        closeAll()
    }

    public var connectionCount: Int { connections.count }

    /// Starts listening on host:port (port 0: any free port), with TLS when
    /// `tls` is given, and returns the port bound.
    @discardableResult
    public func listen(host: String, port: UInt16, tls: TLSServerContext? = nil) throws -> UInt16 {
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host == "localhost" ? "127.0.0.1" : host, &addr.sin_addr) == 1 else {
            throw TransportError.badAddress(host)
        }
        let entry = Listener(server: self, tls: tls)
        let me = Unmanaged.passUnretained(entry).toOpaque()
        let listener = withUnsafePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                evconnlistener_new_bind(loop.base, { _, fd, _, _, arg in
                    let entry = Unmanaged<Listener>.fromOpaque(arg!).takeUnretainedValue()
                    entry.server.accept(fd, tls: entry.tls)
                }, me, UInt32(LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE), 1024, sa,
                Int32(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard let listener else { throw TransportError.cannotListen(host, port, errno) }
        entry.handle = listener
        listeners.append(entry)
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(evconnlistener_get_fd(listener), $0, &len) }
        }
        return UInt16(bigEndian: bound.sin_port)
    }

    private func accept(_ fd: Int32, tls: TLSServerContext?) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let made = tls.map { $0.acceptingBufferevent(loop.base, fd) }
            ?? bufferevent_socket_new(loop.base, fd, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue))
        guard let bev = made else {
            close(fd)
            return
        }
        nextConnectionID += 1
        let connection = Connection(bev: bev, server: self, id: nextConnectionID)
        connections[nextConnectionID] = connection
        if tls != nil { connection.limitHandshake(to: limits.tlsHandshakeSeconds) }
    }

    func connectionClosed(_ c: Connection) {
        connections[c.id] = nil
    }

    /// Stops listening and closes every connection.
    public func closeAll() {
        for l in listeners { if let h = l.handle { evconnlistener_free(h) } }
        listeners.removeAll()
        for c in Array(connections.values) { c.close() }
    }

    func log(_ level: Logger.Level, _ message: Logger.Message) {
        logger.log(level: level, message)
    }
}

public enum TransportError: Error, CustomStringConvertible {
    case badAddress(String)
    case cannotListen(String, UInt16, Int32)

    public var description: String {
        switch self {
        case .badAddress(let h): return "not an IPv4 address: \(h)"
        case .cannotListen(let h, let p, let e): return "cannot listen on \(h):\(p): \(String(cString: strerror(e)))"
        }
    }
}
