import EtcdProto
import Foundation
import SwiftProtobuf
import Transport

/// A client for etcd's v3 API (swetcd or etcd itself): async calls over
/// HTTP/2 connections that a loop thread of the client's own drives. Many
/// calls run at once, multiplexed over `connections` connections.
///
///     let client = try EtcdClient(endpoints: ["127.0.0.1:2379"])
///     try await client.put("greeting", "hello")
///     let value = try await client.get("greeting").kvs.first?.valueString
///     client.close()
public final class EtcdClient: Sendable {
    private let thread: EventLoopThread
    let pool: LoopBound<ConnectionPool>
    /// Seconds a call may take unless it says otherwise.
    public let timeout: Double

    /// TLS to the servers: the CA their certificates chain to (the
    /// system's if nil), a client certificate for servers that ask, or no
    /// verification at all (`insecureSkipVerify`, for tests only).
    public typealias TLS = TLSClientContext.Settings

    /// - Parameters:
    ///   - endpoints: `host:port`, `http://host:port` or `https://host:port`,
    ///     tried in order.
    ///   - connections: HTTP/2 connections to spread calls over.
    ///   - timeout: default deadline of each call, in seconds.
    ///   - tls: TLS settings; with nil, TLS (verified against the system's
    ///     CAs) only for `https://` endpoints.
    ///   - user, password: authenticate as this user (before the first
    ///     call, and again when the server says the token is invalid), as
    ///     etcdctl's `--user`. Without them, calls carry no token (with
    ///     mutual TLS the server may take the certificate's CN as the user).
    public init(endpoints: [String], connections: Int = 1, timeout: Double = 5, tls: TLS? = nil,
                user: String? = nil, password: String? = nil) throws {
        let parsed = try endpoints.map(Self.parse)
        guard !parsed.isEmpty else { throw EtcdError.unavailable("no endpoints") }
        var context: TLSClientContext?
        if tls != nil || endpoints.contains(where: { $0.hasPrefix("https://") }) {
            do {
                context = try TLSClientContext(tls ?? TLS())
            } catch {
                throw EtcdError.other(code: .invalidArgument, message: "TLS: \(error)")
            }
        }
        thread = EventLoopThread()
        var credentials: (user: String, password: String)?
        if let user { credentials = (user, password ?? "") }
        pool = LoopBound(ConnectionPool(loop: thread.loop, endpoints: parsed, size: connections, tls: context,
                                        credentials: credentials, authTimeout: timeout))
        self.timeout = timeout
    }

    static func parse(_ endpoint: String) throws -> (host: String, port: UInt16) {
        var s = Substring(endpoint)
        if s.hasPrefix("http://") { s = s.dropFirst(7) }
        if s.hasPrefix("https://") { s = s.dropFirst(8) }
        guard let colon = s.lastIndex(of: ":"), let port = UInt16(s[s.index(after: colon)...]) else {
            throw EtcdError.unavailable("not an endpoint (host:port): \(endpoint)")
        }
        return (String(s[..<colon]), port)
    }

    /// Closes the connections and stops the client's thread. Calls in flight
    /// fail with `unavailable`.
    public func close() {
        let pool = self.pool
        let thread = self.thread
        thread.loop.execute {
            pool.value.closeAll()
            thread.stop()
        }
    }

    /// Closes, then waits (a few seconds at most) until the client's
    /// thread has ended: for a process about to exit. Not from the
    /// client's own loop.
    public func shutdown() {
        close()
        thread.waitUntilStopped(seconds: 5)
    }

    deinit { close() }

    // MARK: Calls

    /// Any unary RPC with etcd's wire messages (`/etcdserverpb.KV/Range`,
    /// ...), for callers that want whole responses (the CLI prints them):
    /// the same connections, TLS, token and errors as the typed calls.
    public func unary<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ path: String, _ request: Request, timeout: Double? = nil
    ) async throws -> Response {
        let bytes: [UInt8] = try request.serializedBytes()
        let pool = self.pool
        let deadline = timeout ?? self.timeout
        let result: GRPCClientResult = await withCheckedContinuation { continuation in
            pool.value.loop.execute {
                pool.value.call(path, request: bytes, timeout: deadline) { continuation.resume(returning: $0) }
            }
        }
        switch result {
        case .success(let messages):
            guard let first = messages.first else {
                throw EtcdError.other(code: .internal, message: "no response message")
            }
            return try Response(serializedBytes: first)
        case .failure(let status):
            throw EtcdError(status)
        }
    }

    // MARK: Callbacks on the client's loop (load generators)

    /// Runs `body` on the client's loop thread, where `startUnary` may be
    /// called.
    public func onLoop(_ body: @escaping @Sendable () -> Void) {
        pool.value.loop.execute(body)
    }

    /// Makes the client's loop poll instead of sleeping for the next
    /// `seconds` (from the loop thread): a caller that expects an answer
    /// sooner than a sleeping thread wakes up on a halting virtual CPU.
    public func pollLoop(for seconds: Double) {
        pool.value.loop.poll(for: seconds)
    }

    /// Starts a unary call with an encoded request, from the client's loop
    /// thread (see `onLoop`); `done` runs there with the encoded response or
    /// the error. No task, no thread hop and no decoding: for a load
    /// generator that must cost less than the server it measures. `caller`
    /// keeps one caller's calls on one connection (as etcd's benchmark
    /// binds each client to one); nil spreads calls round-robin.
    public func startUnary(_ path: String, _ request: [UInt8], timeout: Double? = nil, caller: Int? = nil,
                           done: @escaping (Result<[UInt8], EtcdError>) -> Void) {
        pool.value.call(path, request: request, timeout: timeout ?? self.timeout, slot: caller) { result in
            switch result {
            case .success(let messages): done(.success(messages.first ?? []))
            case .failure(let status): done(.failure(EtcdError(status)))
            }
        }
    }

    /// Starts a server-streaming call (Election's Observe) with an encoded
    /// request, from the client's loop thread (see `onLoop`): each encoded
    /// response reaches `onMessage` there, and `done` runs there once when
    /// the stream ends (nil when the server ended it with OK). No deadline
    /// unless `timeout` is given; closing the client ends it.
    public func startServerStream(_ path: String, _ request: [UInt8], timeout: Double? = nil,
                                  onMessage: @escaping ([UInt8]) -> Void, done: @escaping (EtcdError?) -> Void) {
        pool.value.call(path, request: request, timeout: timeout, onMessage: onMessage) { result in
            switch result {
            case .success: done(nil)
            case .failure(let status): done(EtcdError(status))
            }
        }
    }

    /// Opens a streaming call (Watch, LeaseKeepAlive) with encoded
    /// requests, from the client's loop thread (see `onLoop`): each encoded
    /// response reaches `onMessage` there, and `done` runs there once when
    /// the stream ends (nil when the server closed it cleanly or it was
    /// cancelled). As `startUnary`, for a load generator that must cost less
    /// than the server it measures; `cancel` on the handle, from the loop
    /// thread, ends it.
    public func startStream(_ path: String, _ requests: [[UInt8]], onMessage: @escaping ([UInt8]) -> Void,
                            done: @escaping (EtcdError?) -> Void) -> StreamHandle {
        let call = StreamHandle()
        startStream(path, requests, on: call, onMessage: onMessage, done: done)
        return call
    }

    /// `startStream` on a handle of the caller's (a watch's keeps its
    /// fragments too).
    func startStream(_ path: String, _ requests: [[UInt8]], on call: StreamHandle,
                     onMessage: @escaping ([UInt8]) -> Void, done: @escaping (EtcdError?) -> Void) {
        pool.value.openStream(path, first: requests.first ?? [], onMessage: { bytes in
            if !call.ended { onMessage(bytes) }
        }, completion: { result in
            call.ended = true
            switch result {
            case .success: done(nil)
            case .failure(let status) where status.code == .canceled: done(nil)
            case .failure(let status): done(EtcdError(status))
            }
        }, opened: { result in
            switch result {
            case .success(let (connection, id)):
                for more in requests.dropFirst() { connection.send(more, on: id) }
                call.connection = connection
                call.streamID = id
                if call.ended { connection.cancel(id) }  // dropped while authenticating
            case .failure(let status):
                call.ended = true
                done(EtcdError(status))
            }
        })
    }

    // MARK: KV

    /// Reads a key or a range of keys.
    public func get(_ range: KeyRange, _ options: GetOptions = GetOptions()) async throws -> GetResponse {
        let r: Etcdserverpb_RangeResponse = try await unary("/etcdserverpb.KV/Range", Self.rangeRequest(range, options))
        return Self.getResponse(r)
    }

    public func get(_ key: String, _ options: GetOptions = GetOptions()) async throws -> GetResponse {
        try await get(.key(key), options)
    }

    @discardableResult
    public func put(_ key: [UInt8], _ value: [UInt8], _ options: PutOptions = PutOptions()) async throws -> PutResponse {
        let r: Etcdserverpb_PutResponse = try await unary("/etcdserverpb.KV/Put", Self.putRequest(key, value, options))
        return Self.putResponse(r)
    }

    @discardableResult
    public func put(_ key: String, _ value: String, _ options: PutOptions = PutOptions()) async throws -> PutResponse {
        try await put(Array(key.utf8), Array(value.utf8), options)
    }

    @discardableResult
    public func delete(_ range: KeyRange, prevKV: Bool = false) async throws -> DeleteResponse {
        let r: Etcdserverpb_DeleteRangeResponse = try await unary("/etcdserverpb.KV/DeleteRange", Self.deleteRequest(range, prevKV))
        return Self.deleteResponse(r)
    }

    /// If every compare holds, runs `success`, else `failure`, atomically.
    public func txn(compare: [Compare], success: [TxnOp], failure: [TxnOp] = []) async throws -> TxnResponse {
        let r: Etcdserverpb_TxnResponse = try await unary("/etcdserverpb.KV/Txn", Self.txnRequest(compare, success, failure))
        return Self.txnResponse(r)
    }

    /// Discards history below `revision`; `physical` waits until the
    /// server's storage no longer holds it.
    @discardableResult
    public func compact(_ revision: Int64, physical: Bool = false) async throws -> ResponseHeader {
        var req = Etcdserverpb_CompactionRequest()
        req.revision = revision
        req.physical = physical
        let r: Etcdserverpb_CompactionResponse = try await unary("/etcdserverpb.KV/Compact", req)
        return ResponseHeader(r.header)
    }

    // MARK: Leases

    /// Grants a lease of `ttl` seconds (`id` 0: the server picks one);
    /// returns its ID and the TTL granted.
    public func grantLease(ttl: Int64, id: Int64 = 0) async throws -> (id: Int64, ttl: Int64) {
        var req = Etcdserverpb_LeaseGrantRequest()
        req.ttl = ttl
        req.id = id
        let r: Etcdserverpb_LeaseGrantResponse = try await unary("/etcdserverpb.Lease/LeaseGrant", req)
        return (r.id, r.ttl)
    }

    /// Ends a lease; its keys are deleted.
    public func revokeLease(_ id: Int64) async throws {
        var req = Etcdserverpb_LeaseRevokeRequest()
        req.id = id
        let _: Etcdserverpb_LeaseRevokeResponse = try await unary("/etcdserverpb.Lease/LeaseRevoke", req)
    }

    /// One keep-alive on a stream of its own (`etcdctl lease keep-alive
    /// --once`); returns the TTL the lease got again, 0 if it is gone.
    public func keepAliveOnce(_ id: Int64) async throws -> Int64 {
        var req = Etcdserverpb_LeaseKeepAliveRequest()
        req.id = id
        let r: Etcdserverpb_LeaseKeepAliveResponse = try await unary("/etcdserverpb.Lease/LeaseKeepAlive", req)
        return r.ttl
    }

    // MARK: Maintenance and Cluster

    public func status() async throws -> StatusResponse {
        let r: Etcdserverpb_StatusResponse = try await unary("/etcdserverpb.Maintenance/Status", Etcdserverpb_StatusRequest())
        return StatusResponse(header: ResponseHeader(r.header), version: r.version, dbSize: r.dbSize,
                              dbSizeInUse: r.dbSizeInUse, leader: r.leader, raftIndex: r.raftIndex,
                              raftTerm: r.raftTerm, raftAppliedIndex: r.raftAppliedIndex, errors: r.errors)
    }

    public func memberList() async throws -> [Member] {
        let r: Etcdserverpb_MemberListResponse = try await unary("/etcdserverpb.Cluster/MemberList", Etcdserverpb_MemberListRequest())
        return r.members.map {
            Member(id: $0.id, name: $0.name, peerURLs: $0.peerUrls, clientURLs: $0.clientUrls, isLearner: $0.isLearner)
        }
    }

    /// Streams the member's backend into `path`, checks the SHA-256 the
    /// server sends after it, and returns the database's size in bytes.
    /// The file holds the database followed by that digest, as etcdctl's.
    /// `progress` gets the bytes received so far (on the client's thread).
    public func snapshot(to path: String, timeout: Double = 600,
                         progress: (@Sendable (Int) -> Void)? = nil) async throws -> Int {
        guard FileManager.default.createFile(atPath: path, contents: nil),
              let file = FileHandle(forWritingAtPath: path) else {
            throw EtcdError.other(code: .internal, message: "cannot create \(path)")
        }
        let sink = LoopBound(SnapshotSink(file: file))
        let pool = self.pool
        let result: GRPCClientResult = await withCheckedContinuation { continuation in
            pool.value.loop.execute {
                pool.value.call("/etcdserverpb.Maintenance/Snapshot", request: [], timeout: timeout,
                                onMessage: {
                                    sink.value.take($0)
                                    progress?(sink.value.received)
                                }) { continuation.resume(returning: $0) }
            }
        }
        try file.close()
        if case .failure(let status) = result { throw EtcdError(status) }
        return try sink.value.verify()
    }
}

/// Writes snapshot chunks as they arrive and checks the closing digest: the
/// last message is the SHA-256 of everything before it, so each blob is
/// hashed only once the next one shows it was not the last.
final class SnapshotSink {
    let file: FileHandle
    private var pending: [UInt8]?
    private var total = 0
    var received: Int { total }
    private var hash = SHA256Accumulator()
    private var failure: String?

    init(file: FileHandle) { self.file = file }

    func take(_ message: [UInt8]) {
        guard let r = try? Etcdserverpb_SnapshotResponse(serializedBytes: message) else {
            failure = "undecodable snapshot message"
            return
        }
        if let previous = pending { hash.update(previous) }
        let blob = [UInt8](r.blob)
        file.write(Data(blob))
        total += blob.count
        pending = blob
    }

    func verify() throws -> Int {
        if let failure { throw EtcdError.other(code: .internal, message: failure) }
        guard let digest = pending, digest.count == 32, hash.finish() == digest else {
            throw EtcdError.other(code: .dataLoss, message: "snapshot checksum mismatch")
        }
        return total - 32
    }
}
