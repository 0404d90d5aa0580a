import CLibevent
import Dispatch
import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Listens on client URLs and serves gRPC (HTTP/2) and HTTP/1.1 on each.
///
/// The router and the HTTP/1.1 handler run on `loop`, the service loop.
/// Connections (TLS, HTTP/2, gRPC framing, the socket) are served either
/// on that loop too, or, with `ioLoops` > 0, spread over that many I/O
/// loops on threads of their own; their calls then cross to the service
/// loop and back (`LoopCrossing`).
public final class TransportServer {
    public let loop: EventLoop
    let router: GRPCRouter
    let http1: HTTP1Handler
    let limits: TransportLimits
    let logger: Logger
    private var listeners: [Listener] = []
    /// Connections open now, on every loop.
    let openConnections = Atomic<Int>(0)

    /// One listening socket, and the TLS its connections start with (nil:
    /// plaintext).
    private final class Listener {
        unowned let server: TransportServer
        let tls: TLSServerContext?
        var handle: OpaquePointer?
        /// How long accepting pauses after it fails for want of a file
        /// descriptor or memory; doubles while it keeps failing.
        var pause = AcceptPause()
        var resume: Timer?
        init(server: TransportServer, tls: TLSServerContext?) {
            self.server = server
            self.tls = tls
        }
    }
    /// Where connections are served: the service loop alone, or the I/O
    /// loops, taken in turn.
    private let homes: [ConnectionHome]
    private var nextHome = 0
    /// The router's methods and their kinds, for I/O loops (read only).
    let methodKinds: [String: GRPCMethodKind]

    /// `ioLoops` > 0 needs a router that lists its methods' kinds
    /// (`methodKinds`); without them connections stay on the service loop.
    public init(loop: EventLoop, router: GRPCRouter, http1: HTTP1Handler,
                limits: TransportLimits = TransportLimits(), ioLoops: Int = 0, logger: Logger) {
        self.loop = loop
        self.router = router
        self.http1 = http1
        self.limits = limits
        self.logger = logger
        let kinds = router.methodKinds
        methodKinds = kinds ?? [:]
        if ioLoops > 0 && kinds != nil {
            homes = (0..<ioLoops).map { _ in ConnectionHome(serviceLoop: loop) }
        } else {
            homes = [ConnectionHome(loop: loop)]
        }
    }

    deinit {
        closeAll()
    }

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
                    entry.pause.reset()
                    entry.server.accept(fd, tls: entry.tls)
                    entry.server.pauseIfFull(entry)
                }, me, UInt32(LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE), 1024, sa,
                Int32(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard let listener else { throw TransportError.cannotListen(host, port, errno) }
        entry.handle = listener
        evconnlistener_set_error_cb(listener) { _, arg in
            let entry = Unmanaged<Listener>.fromOpaque(arg!).takeUnretainedValue()
            entry.server.acceptFailed(entry, errno)
        }
        listeners.append(entry)
        var bound = sockaddr_in()
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &bound) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(evconnlistener_get_fd(listener), $0, &len) }
        }
        return UInt16(bigEndian: bound.sin_port)
    }

    /// accept() failed. With no descriptor or memory left the listening
    /// socket stays readable, and libevent would call again at once, for
    /// ever; so, as Go's http.Server does, stop accepting for a while (5 ms,
    /// doubling to 1 s) and say so. Open connections are served meanwhile,
    /// and new ones wait in the listen queue.
    private func acceptFailed(_ entry: Listener, _ error: Int32) {
        guard AcceptPause.isResourceShortage(error) else {
            log(.warning, "accept failed: \(String(cString: strerror(error)))")
            return
        }
        pause(entry, "accept error: \(String(cString: strerror(error)))")
    }

    /// Stops accepting while `maxConnections` are open (checked again after
    /// each pause).
    private func pauseIfFull(_ entry: Listener) {
        let open = openConnections.load(ordering: .relaxed)
        if open >= limits.maxConnections {
            pause(entry, "\(open) client connections open, as many as the descriptor limit leaves room for")
        }
    }

    private func pause(_ entry: Listener, _ why: String) {
        guard let handle = entry.handle else { return }
        let seconds = entry.pause.next()
        log(.warning, "\(why); retrying in \(Int(seconds * 1000))ms")
        evconnlistener_disable(handle)
        entry.resume = loop.schedule(every: seconds, repeats: false) { [unowned self, unowned entry] in
            entry.resume = nil
            guard let h = entry.handle else { return }
            evconnlistener_enable(h)
            pauseIfFull(entry)
        }
    }

    private func accept(_ fd: Int32, tls: TLSServerContext?) {
        openConnections.add(1, ordering: .relaxed)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let home = homes[nextHome]
        nextHome = (nextHome + 1) % homes.count
        guard home.crossing != nil else { return home.adopt(fd, tls: tls, server: self) }
        let server = LoopBound(self), tls = LoopBound(tls)
        home.loop.execute { home.adopt(fd, tls: tls.value, server: server.value) }
    }

    /// Stops listening and closes every connection; the I/O loops' threads
    /// end. (Call on the service loop's thread, or once it has stopped.)
    public func closeAll() {
        for l in listeners {
            l.resume?.cancel()
            if let h = l.handle { evconnlistener_free(h) }
            l.handle = nil
        }
        listeners.removeAll()
        for home in homes { home.closeAll() }
    }

    func log(_ level: Logger.Level, _ message: Logger.Message) {
        logger.log(level: level, message)
    }
}

/// The back-off of accepting after a shortage: 5 ms, doubling to 1 s, back
/// to 5 ms once a connection is accepted.
struct AcceptPause {
    static let first = 0.005, longest = 1.0
    private(set) var last: Double?

    static func isResourceShortage(_ error: Int32) -> Bool {
        error == EMFILE || error == ENFILE || error == ENOBUFS || error == ENOMEM
    }

    mutating func next() -> Double {
        let seconds = last.map { min($0 * 2, Self.longest) } ?? Self.first
        last = seconds
        return seconds
    }

    mutating func reset() { last = nil }
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

/// The two ways between the service loop and an I/O loop (a class: calls
/// hold it with one reference count, not two).
final class LoopCrossing {
    /// Posted on the service loop, run on the I/O loop.
    let toIO: LoopHandoff
    /// Posted on the I/O loop, run on the service loop.
    let toService: LoopHandoff

    init(toIO: LoopHandoff, toService: LoopHandoff) {
        self.toIO = toIO
        self.toService = toService
    }
}

/// A loop that serves connections, and the connections it serves (touched
/// on its thread only).
final class ConnectionHome: @unchecked Sendable {
    // @unchecked: `connections` is used on the loop's thread only; the
    // service loop reaches it through `loop.execute`.
    let loop: EventLoop
    /// nil: this is the service loop itself.
    let crossing: LoopCrossing?
    private let thread: EventLoopThread?
    private var connections: [Int: Connection] = [:]
    private var nextConnectionID = 0
    private var isShutDown = false

    /// The service loop, serving its own connections.
    init(loop: EventLoop) {
        self.loop = loop
        crossing = nil
        thread = nil
    }

    /// An I/O loop on a new thread.
    init(serviceLoop: EventLoop) {
        let thread = EventLoopThread()
        self.thread = thread
        loop = thread.loop
        crossing = LoopCrossing(toIO: LoopHandoff(from: serviceLoop, to: thread.loop),
                                toService: LoopHandoff(from: thread.loop, to: serviceLoop))
    }

    func adopt(_ fd: Int32, tls: TLSServerContext?, server: TransportServer) {
        let made = tls.map { $0.acceptingBufferevent(loop.base, fd) }
            ?? bufferevent_socket_new(loop.base, fd, Int32(BEV_OPT_CLOSE_ON_FREE.rawValue))
        guard let bev = made else {
            close(fd)
            server.openConnections.subtract(1, ordering: .relaxed)
            return
        }
        nextConnectionID += 1
        let connection = Connection(bev: bev, server: server, home: self, id: nextConnectionID)
        connections[nextConnectionID] = connection
        if tls != nil { connection.limitHandshake(to: server.limits.tlsHandshakeSeconds) }
    }

    func connectionClosed(_ c: Connection) {
        connections[c.id] = nil
    }

    /// Closes every connection (on the loop's thread, waiting for it), then
    /// ends the loop's thread.
    func closeAll() {
        guard let thread else {
            for c in Array(connections.values) { c.close() }
            return
        }
        guard !isShutDown else { return }
        isShutDown = true
        let done = DispatchSemaphore(value: 0)
        let me = LoopBound(self)
        loop.execute {
            for c in Array(me.value.connections.values) { c.close() }
            done.signal()
        }
        done.wait()
        thread.stop()
        thread.waitUntilStopped(seconds: 5)
    }
}
