import Logging
import Metrics
import Raft
import Transport

/// Raft messages between members, on the same loop and HTTP/2 stack as
/// clients: each member keeps one long-lived stream open to each peer
/// (`/swetcd.Raft/Stream` on the peer's --listen-peer-urls) and writes its
/// messages to that peer on it, one `raftpb.Message` per gRPC frame; the
/// messages arriving on streams other members opened are handed to
/// `receive`. A message that cannot go now (the peer is down, the stream is
/// being reopened) is dropped: Raft resends what matters (appends after a
/// rejection or a heartbeat answer, votes on the next timeout), so a dead
/// peer costs no memory. Reconnection backs off from 100 ms to 1 s.
public final class PeerTransport: GRPCRouter {
    public static let streamPath = "/swetcd.Raft/Stream"

    private final class Peer {
        let id: NodeID
        let host: String
        let port: UInt16
        var connection: HTTP2ClientConnection?
        var stream: Int32 = -1
        var nextAttempt: UInt64 = 0
        var backoff: UInt64 = 100_000_000
        /// Since when (monotonic nanoseconds) its stream is known to be
        /// connected, if it is (logged on change).
        var activeSince: UInt64?
        /// For requests (`call`), apart from the Raft stream.
        var requests: HTTP2ClientConnection?

        init(id: NodeID, host: String, port: UInt16) {
            self.id = id
            self.host = host
            self.port = port
        }
    }

    private let loop: EventLoop
    private let logger: Logger
    private let localID: NodeID
    private let clusterID: UInt64
    private var peers: [NodeID: Peer] = [:]
    /// Messages from peers, decoded.
    public var receive: ((Message) -> Void)?
    public private(set) var sentBytes: [NodeID: Int] = [:]
    public private(set) var receivedBytes: [NodeID: Int] = [:]
    /// Messages to each peer dropped unsent (etcd's `peer_sent_failures_total`),
    /// from 0 for every peer so that the series exists before a failure.
    public private(set) var sendFailures: [NodeID: Int] = [:]
    /// Heartbeats among those (etcd's `heartbeat_send_failures_total`).
    public private(set) var heartbeatSendFailures = 0
    /// Round trips of a probe to each peer (etcd's prober).
    public private(set) var roundTrips: [NodeID: Histogram] = [:]
    /// etcd's buckets: 0.1 ms doubling 16 times.
    public static let roundTripBuckets = Histogram.exponentialBuckets(start: 0.0001, factor: 2, count: 16)
    public static let probePath = "/swetcd.Raft/Probe"
    private var probeTimer: Timer?
    private var streamTimer: Timer?

    /// TLS to peers (https peer URLs), with this member's certificate.
    private let tls: TLSClientContext?

    /// - Parameter peers: every other member's peer address.
    public init(loop: EventLoop, localID: NodeID, clusterID: UInt64, peers: [NodeID: (host: String, port: UInt16)],
                tls: TLSClientContext? = nil, logger: Logger) {
        self.loop = loop
        self.tls = tls
        self.logger = logger
        self.localID = localID
        self.clusterID = clusterID
        for (id, address) in peers where id != localID {
            self.peers[id] = Peer(id: id, host: address.host, port: address.port)
            sendFailures[id] = 0
        }
        services[Self.probePath] = GRPCMethod(.unary) { call, _ in call.respond([UInt8]()) }
        streamTimer = loop.schedule(every: 0.1) { [unowned self] in keepStreamsOpen() }
        // The first probe soon after start, then every 5 s.
        probeTimer = loop.schedule(every: 1, repeats: false) { [unowned self] in
            probe()
            probeTimer = loop.schedule(every: 5) { [unowned self] in probe() }
        }
    }

    /// Times a request to each peer's probe method.
    private func probe() {
        for id in peers.keys {
            let started = monotonicNanoseconds()
            call(Self.probePath, to: id, request: [], timeout: 5) { [weak self] result in
                guard let self, case .success = result else { return }
                let took = monotonicNanoseconds() - started
                let h = roundTrips[id] ?? Histogram(bounds: Self.roundTripBuckets)
                roundTrips[id] = h
                h.observe(nanoseconds: took)
            }
        }
    }

    /// Sends `m` to its member, or drops it (see the type's comment).
    /// False when it was dropped here, unsent (the peer is known to be
    /// down): then it surely never arrives.
    @discardableResult
    public func send(_ m: Message) -> Bool {
        guard let peer = peers[m.to], let bytes = try? RaftWire.encode(m) else {
            sendFailed(m)
            return false
        }
        if let connection = peer.connection, peer.stream > 0, !connection.isClosed {
            if connection.wasConnected && peer.activeSince == nil { becameActive(peer) }
            sentBytes[m.to, default: 0] += bytes.count
            connection.send(bytes, on: peer.stream)
            return true
        }
        if open(peer, first: bytes) { return true }
        sendFailed(m)
        return false
    }

    private func sendFailed(_ m: Message) {
        sendFailures[m.to, default: 0] += 1
        if m.type == .heartbeat { heartbeatSendFailures += 1 }
    }

    private func becameActive(_ peer: Peer) {
        peer.activeSince = monotonicNanoseconds()
        peer.backoff = 100_000_000
        logger.info("peer became active", metadata: ["peer-id": "\(String(peer.id, radix: 16))"])
    }

    /// Keeps a stream open to every peer, messages or not (as etcd's
    /// streams are), so that each member knows which peers it reaches
    /// (`activeSince`) and a removed member hears it was removed.
    private func keepStreamsOpen() {
        for peer in peers.values {
            if let connection = peer.connection, peer.stream > 0, !connection.isClosed {
                if connection.wasConnected && peer.activeSince == nil { becameActive(peer) }
            } else {
                _ = open(peer, first: [])
            }
        }
    }

    private func open(_ peer: Peer, first: [UInt8]) -> Bool {
        let now = monotonicNanoseconds()
        guard now >= peer.nextAttempt else { return false }
        peer.nextAttempt = now + peer.backoff
        peer.backoff = min(peer.backoff * 2, 1_000_000_000)
        peer.connection?.close()
        let connection = HTTP2ClientConnection(loop: loop, host: peer.host, port: peer.port, tls: tls)
        peer.connection = connection
        let metadata = [("x-etcd-cluster-id", String(clusterID, radix: 16)), ("x-server-from", String(localID, radix: 16))]
        peer.stream = connection.call(Self.streamPath, request: first, timeout: nil, metadata: metadata,
                                      onMessage: { _ in }, keepSending: true) { [weak self, weak peer] result in
            guard let self, let peer, peer.connection === connection else { return }
            // The stream ended (peer gone, or it refused us): the next
            // message reopens it, after the backoff.
            if case .failure(let status) = result, status.code != .unavailable {
                if status.message == Self.memberRemoved {
                    // This member was removed while it was away: it stops.
                    self.removedByPeers?()
                } else if status.message == Self.clusterIDMismatch {
                    // etcd's words for it (a member of another cluster, or
                    // started with another token or data dir).
                    self.logger.warning("request sent was ignored by remote peer due to cluster ID mismatch", metadata: [
                        "remote-peer-id": "\(String(peer.id, radix: 16))", "local-member-id": "\(String(self.localID, radix: 16))",
                        "local-member-cluster-id": "\(String(self.clusterID, radix: 16))", "error": "cluster ID mismatch"])
                } else {
                    self.logger.warning("peer refused the raft stream", metadata: ["peer": "\(String(peer.id, radix: 16))", "error": "\(status.message)"])
                }
            }
            if peer.activeSince != nil {
                peer.activeSince = nil
                let reason = if case .failure(let status) = result { status.message } else { "the stream ended" }
                self.logger.warning("peer became inactive (message send to peer failed)",
                                    metadata: ["peer-id": "\(String(peer.id, radix: 16))", "error": "\(reason)"])
            }
            peer.stream = -1
            peer.connection = nil
        }
        guard peer.stream > 0 else { return false }
        if !first.isEmpty { sentBytes[peer.id, default: 0] += first.count }
        return true
    }

    /// A request to another member's peer service (a lease renewal for the
    /// leader, say): `completion` runs on the loop with the response, or
    /// the status it failed with.
    public func call(_ path: String, to id: NodeID, request: [UInt8], timeout: Double,
                     completion: @escaping (Result<[UInt8], GRPCStatus>) -> Void) {
        guard let peer = peers[id] else { return completion(.failure(GRPCStatus(.unavailable, "no such peer"))) }
        if peer.requests == nil || peer.requests!.isClosed {
            peer.requests = HTTP2ClientConnection(loop: loop, host: peer.host, port: peer.port, tls: tls)
        }
        peer.requests!.call(path, request: request, timeout: timeout,
                            metadata: [("x-etcd-cluster-id", String(clusterID, radix: 16))]) { result in
            switch result {
            case .success(let messages):
                guard let first = messages.first else { return completion(.failure(GRPCStatus(.internal, "empty answer"))) }
                completion(.success(first))
            case .failure(let status): completion(.failure(status))
            }
        }
    }

    /// Streams a large request to another member on a connection of its
    /// own (a snapshot, beside the Raft stream): `first`, then each message
    /// `next` gives until it gives nil, a little at a time as the
    /// connection drains, so only about `window` bytes are ever queued.
    /// `completion` runs on the loop with the peer's answer.
    public func upload(_ path: String, to id: NodeID, first: [UInt8], window: Int = 1 << 20,
                       next: @escaping () -> [UInt8]?, completion: @escaping (Result<Void, GRPCStatus>) -> Void) {
        guard let peer = peers[id] else { return completion(.failure(GRPCStatus(.unavailable, "no such peer"))) }
        let connection = HTTP2ClientConnection(loop: loop, host: peer.host, port: peer.port, tls: tls)
        let metadata = [("x-etcd-cluster-id", String(clusterID, radix: 16)), ("x-server-from", String(localID, radix: 16))]
        let stream = connection.call(path, request: first, timeout: nil, metadata: metadata, keepSending: true) { result in
            connection.close()
            completion(result.map { _ in () })
        }
        guard stream > 0 else { return }
        sentBytes[id, default: 0] += first.count
        var ended = false
        let refill = { [weak self] in
            while !ended && connection.queuedRequestBytes(on: stream) < window {
                guard let message = next() else {
                    ended = true
                    connection.closeSend(on: stream)
                    return
                }
                self?.sentBytes[id, default: 0] += message.count
                connection.send(message, on: stream)
            }
        }
        connection.onRequestDrained(stream, refill)
        refill()
    }

    /// Starts talking to a member added to the cluster.
    public func addPeer(_ id: NodeID, host: String, port: UInt16) {
        guard id != localID, peers[id] == nil else { return }
        peers[id] = Peer(id: id, host: host, port: port)
        if sendFailures[id] == nil { sendFailures[id] = 0 }
    }

    /// Stops talking to a member removed from the cluster: its streams
    /// to this member end, refused as a removed member's.
    public func removePeer(_ id: NodeID) {
        for call in (incoming.removeValue(forKey: id) ?? [:]).values {
            call.finish(GRPCStatus(.failedPrecondition, Self.memberRemoved))
        }
        guard let peer = peers.removeValue(forKey: id) else { return }
        peer.connection?.close()
        peer.requests?.close()
    }

    /// Streams other members opened to this one, by sender.
    private var incoming: [NodeID: [ObjectIdentifier: GRPCCall]] = [:]

    /// A member's new peer address: its streams reopen there.
    public func updatePeer(_ id: NodeID, host: String, port: UInt16) {
        guard id != localID, let peer = peers.removeValue(forKey: id) else { return }
        peer.connection?.close()
        peer.requests?.close()
        addPeer(id, host: host, port: port)
    }

    /// Since when (monotonic nanoseconds) this member's stream to `id` has
    /// been connected without a break; nil if it is not (etcd's
    /// ActiveSince).
    public func activeSince(_ id: NodeID) -> UInt64? { peers[id]?.activeSince }

    /// The members this one talks to.
    public var peerIDs: [NodeID] { peers.keys.sorted() }

    /// etcd's words to a member that was removed from the cluster.
    public static let memberRemoved = "the member has been permanently removed from the cluster"
    /// Whether a member was removed from the cluster (its streams are
    /// refused, with `memberRemoved`).
    public var isRemoved: ((NodeID) -> Bool)?
    /// A peer refused this member's stream as that of a removed member.
    public var removedByPeers: (() -> Void)?

    /// Peer services other than the Raft stream, by path.
    public var services: [String: GRPCMethod] = [:]

    /// Stops every outgoing stream.
    public func close() {
        probeTimer = nil
        streamTimer = nil
        for peer in peers.values {
            peer.connection?.close()
            peer.connection = nil
            peer.stream = -1
            peer.requests?.close()
            peer.requests = nil
        }
    }

    // MARK: Incoming streams

    /// etcd's answer to a request from a member of another cluster.
    public static let clusterIDMismatch = "request cluster ID mismatch"

    /// The CommonName a peer's verified certificate must have
    /// (--peer-cert-allowed-cn); nil: any.
    public var allowedCommonName: String?

    public func method(for path: String) -> Result<GRPCMethod, GRPCStatus> {
        guard let allowed = allowedCommonName else { return route(path) }
        return route(path).map { method in
            GRPCMethod(method.kind) { [logger] call, first in
                guard call.peerCommonName == allowed else {
                    logger.warning("rejected a peer whose certificate has another CommonName", metadata: [
                        "common-name": "\(call.peerCommonName ?? "")", "allowed-cn": "\(allowed)"])
                    return call.finish(GRPCStatus(.permissionDenied, "peer certificate CommonName is not \(allowed) (--peer-cert-allowed-cn)"))
                }
                method.handler(call, first)
            }
        }
    }

    private func route(_ path: String) -> Result<GRPCMethod, GRPCStatus> {
        if let service = services[path] { return .success(service) }
        guard path == Self.streamPath else { return .failure(GRPCStatus(.unimplemented, "unknown method \(path)")) }
        return .success(GRPCMethod(.bidirectionalStreaming) { [unowned self] call, first in
            if let theirs = call.metadata("x-etcd-cluster-id"), theirs != String(clusterID, radix: 16) {
                // etcd's answer to a member of another cluster.
                logger.warning("request cluster ID mismatch", metadata: [
                    "local-member-id": "\(String(localID, radix: 16))", "local-member-cluster-id": "\(String(clusterID, radix: 16))",
                    "remote-peer-id": "\(call.metadata("x-server-from") ?? "")", "remote-peer-cluster-id": "\(theirs)"])
                call.finish(GRPCStatus(.failedPrecondition, Self.clusterIDMismatch))
                return
            }
            if let from = call.metadata("x-server-from").flatMap({ UInt64($0, radix: 16) }), isRemoved?(from) == true {
                logger.warning("rejected stream from a removed member", metadata: ["remote-peer-id": "\(String(from, radix: 16))"])
                call.finish(GRPCStatus(.failedPrecondition, Self.memberRemoved))
                return
            }
            deliver(first)
            call.onMessage = { [unowned self] bytes in deliver(bytes) }
            // Kept by sender, so that a member removed while connected is
            // told so (it reconnects, and is refused).
            if let from = call.metadata("x-server-from").flatMap({ UInt64($0, radix: 16) }) {
                let ref = ObjectIdentifier(call)
                incoming[from, default: [:]][ref] = call
                call.onClose = { [weak self] in self?.incoming[from]?[ref] = nil }
            }
        })
    }

    private func deliver(_ bytes: [UInt8]) {
        // The empty message that opens a stream with nothing to send.
        if bytes.isEmpty { return }
        guard let m = try? RaftWire.decode(bytes), m.to == localID else {
            logger.warning("dropped an undecodable raft message from a peer", metadata: ["bytes": "\(bytes.count)"])
            return
        }
        receivedBytes[m.from, default: 0] += bytes.count
        receive?(m)
    }
}
