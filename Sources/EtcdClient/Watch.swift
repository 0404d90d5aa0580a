import EtcdProto
import Foundation
import Transport

public struct WatchOptions: Sendable {
    /// First revision to deliver; 0: changes after the watch is created.
    public var startRevision: Int64 = 0
    /// Attach each key's previous version to its events.
    public var prevKV = false
    public var noPut = false
    public var noDelete = false
    /// Ask for periodic progress notifications (empty responses).
    public var progressNotify = false
    /// Let the server split very large responses (reassembled here).
    public var fragment = false

    public init() {}
}

/// A change to one key.
public struct WatchEvent: Sendable {
    public enum Kind: Sendable { case put, delete }
    public var kind: Kind
    /// For a delete, only `key` and `modRevision` are set.
    public var kv: KeyValue
    public var prevKV: KeyValue?
}

public struct WatchResponse: Sendable {
    public var header: ResponseHeader
    public var watchID: Int64
    public var created: Bool
    public var canceled: Bool
    /// Set when the watch was cancelled because its start is compacted.
    public var compactRevision: Int64
    public var cancelReason: String
    public var events: [WatchEvent]

    /// An empty response that only reports progress: every event up to
    /// `header.revision` has been delivered.
    public var isProgressNotification: Bool { events.isEmpty && !created && !canceled }
}

/// The client side of one stream, on the client's loop thread.
public class StreamHandle {
    var connection: HTTP2ClientConnection?
    var streamID: Int32 = -1
    var ended = false

    init() {}

    /// Ends the stream (RST_STREAM CANCEL); from the client's loop thread.
    public func cancel() {
        guard !ended else { return }
        ended = true
        if let connection, streamID > 0 { connection.cancel(streamID) }
    }
}

/// A watch stream's handle, with the fragments of a response not yet whole.
final class WatchCall: StreamHandle {
    var pendingFragments: [Mvccpb_Event] = []
}

extension EtcdClient {
    /// Watches a key or range: the created response first, then events in
    /// revision order, all of a revision's events in one response. The
    /// sequence ends when the watch is cancelled (a response with
    /// `canceled`), and throws if the connection fails; stop iterating to
    /// cancel it.
    public func watch(_ range: KeyRange, _ options: WatchOptions = WatchOptions()) -> AsyncThrowingStream<WatchResponse, Error> {
        watch([(range, options)])
    }

    /// Several watchers on one Watch stream (as etcd's own client shares a
    /// stream): responses of all of them, told apart by `watchID` (assigned
    /// 0, 1, ... in the order given). Ends when every watcher is cancelled.
    public func watch(_ watchers: [(KeyRange, WatchOptions)]) -> AsyncThrowingStream<WatchResponse, Error> {
        watchStream(watchers).responses
    }

    /// `watch`, with a way to ask for progress on the stream (etcd's
    /// `RequestProgress`): the server answers with an empty response
    /// (watch ID -1) at a revision up to which every event has been sent,
    /// once all the stream's watchers are synced. Asking before the stream
    /// is open does nothing.
    public func watchStream(_ watchers: [(KeyRange, WatchOptions)])
        -> (responses: AsyncThrowingStream<WatchResponse, Error>, requestProgress: @Sendable () -> Void) {
        let state = LoopBound(WatchCall())
        let pool = self.pool
        var progress = Etcdserverpb_WatchRequest()
        progress.requestUnion = .progressRequest(Etcdserverpb_WatchProgressRequest())
        let progressBytes: [UInt8] = (try? progress.serializedBytes()) ?? []
        let requestProgress: @Sendable () -> Void = {
            pool.value.loop.execute {
                let call = state.value
                if !call.ended, let connection = call.connection, call.streamID > 0 { connection.send(progressBytes, on: call.streamID) }
            }
        }
        return (watch(watchers, state: state), requestProgress)
    }

    private func watch(_ watchers: [(KeyRange, WatchOptions)], state: LoopBound<WatchCall>) -> AsyncThrowingStream<WatchResponse, Error> {
        let requests: [[UInt8]] = watchers.map { range, options in
            var create = Etcdserverpb_WatchCreateRequest()
            (create.key, create.rangeEnd) = range.wire
            create.startRevision = options.startRevision
            create.prevKv = options.prevKV
            create.progressNotify = options.progressNotify
            create.fragment = options.fragment
            if options.noPut { create.filters.append(.noput) }
            if options.noDelete { create.filters.append(.nodelete) }
            var request = Etcdserverpb_WatchRequest()
            request.requestUnion = .createRequest(create)
            return (try? request.serializedBytes()) ?? []
        }
        let pool = self.pool
        return AsyncThrowingStream { continuation in
            pool.value.loop.execute {
                let call = state.value
                var open = requests.count
                self.startStream("/etcdserverpb.Watch/Watch", requests, on: call, onMessage: { bytes in
                    guard let r = try? Etcdserverpb_WatchResponse(serializedBytes: bytes) else { return }
                    if r.fragment {
                        call.pendingFragments += r.events
                        return
                    }
                    var whole = r
                    if !call.pendingFragments.isEmpty {
                        whole.events = call.pendingFragments + r.events
                        call.pendingFragments = []
                    }
                    continuation.yield(WatchResponse(whole))
                    if r.canceled {
                        open -= 1
                        if open == 0 {
                            call.cancel()
                            continuation.finish()
                        }
                    }
                }, done: { error in
                    if let error { continuation.finish(throwing: error) } else { continuation.finish() }
                })
            }
            continuation.onTermination = { _ in
                pool.value.loop.execute { state.value.cancel() }
            }
        }
    }

    /// A watch that survives lost connections: it reconnects and continues
    /// from the revision after the last one it delivered, so the consumer
    /// sees every change once, in order. Only the first created response is
    /// delivered; a compacted start ends it with `EtcdError.compacted`.
    public func resumableWatch(_ range: KeyRange, _ options: WatchOptions = WatchOptions(),
                               retryDelay: Double = 0.2) -> AsyncThrowingStream<WatchResponse, Error> {
        AsyncThrowingStream { continuation in
            let task = Task {
                var next = options.startRevision
                var announced = false
                while !Task.isCancelled {
                    var o = options
                    o.startRevision = next
                    do {
                        for try await r in watch(range, o) {
                            if r.canceled {
                                if r.compactRevision != 0 { throw EtcdError.compacted }
                                continuation.finish()
                                return
                            }
                            if r.created {
                                // Pin the position so a reconnect misses nothing.
                                if next == 0 { next = r.header.revision + 1 }
                                if announced { continue }
                                announced = true
                            }
                            if let last = r.events.last {
                                next = last.kv.modRevision + 1
                            } else if r.isProgressNotification {
                                next = max(next, r.header.revision + 1)
                            }
                            continuation.yield(r)
                        }
                    } catch EtcdError.unavailable {
                        // Reconnect below.
                    } catch {
                        continuation.finish(throwing: error)
                        return
                    }
                    try? await Task.sleep(nanoseconds: UInt64(retryDelay * 1e9))
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}

extension WatchResponse {
    init(_ r: Etcdserverpb_WatchResponse) {
        header = ResponseHeader(r.header)
        watchID = r.watchID
        created = r.created
        canceled = r.canceled
        compactRevision = r.compactRevision
        cancelReason = r.cancelReason
        events = r.events.map {
            WatchEvent(kind: $0.type == .delete ? .delete : .put, kv: KeyValue($0.kv),
                       prevKV: $0.hasPrevKv ? KeyValue($0.prevKv) : nil)
        }
    }
}
