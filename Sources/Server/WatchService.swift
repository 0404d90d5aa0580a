import EtcdProto
import Foundation
import MVCC
import Transport

/// One Watch call: a bidirectional stream carrying any number of watchers.
final class WatchStream {
    let call: GRPCCall
    struct Watch {
        var clientID: Int64
        var prevKV: Bool
        var fragment: Bool
        var progressNotify: Bool
        /// etcd's ticker flag: a progress notification is due at the next
        /// tick unless events were sent since the last one.
        var progressDue = true
    }
    var watches: [WatchHub.ID: Watch] = [:]
    var byClientID: [Int64: WatchHub.ID] = [:]
    var nextClientID: Int64 = 0
    /// A progress request waits until every watcher of the stream is synced.
    var progressRequested = false

    init(call: GRPCCall) { self.call = call }

    /// Stop sending to this stream past this many queued bytes: its
    /// watchers fall back to history until it drains.
    static let highWaterBytes = 1 << 20
    var isBackedUp: Bool { call.queuedBytes >= Self.highWaterBytes }
}

/// etcdserverpb.Watch over the watch hub.
extension EtcdServer {
    func registerWatch() {
        // Watchers see a change only once it is committed, never one that a
        // crash could still take back.
        store.onChange = { [unowned self] revision, events in
            uncommittedChanges.append((revision, events))
        }
        register("etcdserverpb.Watch", "Watch", .bidirectionalStreaming) { [unowned self] call, _ in
            let key = Metrics.CallKey(type: "bidi_stream", service: "etcdserverpb.Watch", method: "Watch")
            metrics.callStarted(key)
            let stream = WatchStream(call: call)
            watchStreams[ObjectIdentifier(stream)] = stream
            call.onMessage = { [unowned self, unowned stream] bytes in
                guard let request = try? Etcdserverpb_WatchRequest(serializedBytes: bytes) else {
                    finish(call, key, status: GRPCStatus(.internal, "grpc: error unmarshalling request"))
                    return
                }
                handle(request, on: stream)
            }
            call.onRequestEnd = { [unowned self] in finish(call, key, status: .ok) }
            call.onWritable = { [unowned self] in watchCatchUpTask.trigger() }
            call.onClose = { [unowned self, unowned stream] in closeWatchStream(stream) }
        }
    }

    private func handle(_ request: Etcdserverpb_WatchRequest, on stream: WatchStream) {
        switch request.requestUnion {
        case .createRequest(let c): createWatch(c, on: stream)
        case .cancelRequest(let c):
            guard let id = stream.byClientID[c.watchID] else { return }
            removeWatch(id, from: stream)
            var r = Etcdserverpb_WatchResponse()
            r.header = header()
            r.watchID = c.watchID
            r.canceled = true
            send(r, on: stream)
        case .progressRequest:
            stream.progressRequested = true
            sendRequestedProgress(stream)
        case nil:
            break
        }
    }

    private func createWatch(_ c: Etcdserverpb_WatchCreateRequest, on stream: WatchStream) {
        var created = Etcdserverpb_WatchResponse()
        created.header = header()
        created.created = true
        // etcd: an empty key means "\0", the smallest key.
        let key = c.key.isEmpty ? [UInt8(0)] : [UInt8](c.key)
        if c.startRevision < 0 {
            created.watchID = -1
            created.canceled = true
            created.cancelReason = MVCCError.compacted.grpcMessage
            send(created, on: stream)
            return
        }
        var clientID = c.watchID
        if clientID == 0 {
            while stream.byClientID[stream.nextClientID] != nil { stream.nextClientID += 1 }
            clientID = stream.nextClientID
            stream.nextClientID += 1
        } else if stream.byClientID[clientID] != nil {
            created.watchID = -1
            created.canceled = true
            created.cancelReason = "mvcc: duplicate watch ID provided on the WatchStream"
            send(created, on: stream)
            return
        }
        nextWatcherID += 1
        let id = nextWatcherID
        stream.watches[id] = WatchStream.Watch(clientID: clientID, prevKV: c.prevKv, fragment: c.fragment,
                                               progressNotify: c.progressNotify)
        stream.byClientID[clientID] = id
        watchOwners[id] = stream
        created.watchID = clientID
        send(created, on: stream)
        watchHub.add(id, range: KeyRange(key: key, rangeEnd: [UInt8](c.rangeEnd)), startRevision: c.startRevision,
                     noPut: c.filters.contains(.noput), noDelete: c.filters.contains(.nodelete),
                     currentRevision: store.currentRevision)
        if !watchHub.isSynced(id) { watchCatchUpTask.trigger() }
    }

    private func removeWatch(_ id: WatchHub.ID, from stream: WatchStream) {
        watchHub.remove(id)
        watchOwners[id] = nil
        if let w = stream.watches.removeValue(forKey: id) { stream.byClientID[w.clientID] = nil }
    }

    private func closeWatchStream(_ stream: WatchStream) {
        for id in Array(stream.watches.keys) { removeWatch(id, from: stream) }
        watchStreams[ObjectIdentifier(stream)] = nil
    }

    // MARK: Sending

    /// Hands the changes committed just now to the watchers.
    func dispatchCommittedChanges() {
        let changes = uncommittedChanges
        uncommittedChanges.removeAll()
        for (revision, events) in changes { dispatchWatchEvents(revision, events) }
    }

    private func dispatchWatchEvents(_ revision: Int64, _ events: [WatchEvent]) {
        for (id, evs) in watchHub.dispatch(revision: revision, events: events) {
            guard let stream = watchOwners[id] else { continue }
            if stream.isBackedUp {
                // The consumer is slow: it gets these from history later.
                watchHub.desync(id, from: evs[0].revision)
                continue
            }
            sendEvents(evs, to: id, on: stream, headerRevision: revision)
        }
        if watchHub.hasUnsynced { watchCatchUpTask.trigger() }
    }

    /// One bounded catch-up pass; runs again while there is work it can do.
    func watchCatchUp() {
        do {
            let result = try watchHub.catchUp(store) { id in !(watchOwners[id]?.isBackedUp ?? true) }
            for (id, compactRevision) in result.compacted {
                guard let stream = watchOwners[id], let w = stream.watches[id] else { continue }
                var r = Etcdserverpb_WatchResponse()
                r.header = header()
                r.watchID = w.clientID
                r.compactRevision = compactRevision
                r.canceled = true
                send(r, on: stream)
                watchOwners[id] = nil
                stream.watches[id] = nil
                stream.byClientID[w.clientID] = nil
            }
            for (id, events) in result.deliveries {
                guard let stream = watchOwners[id] else { continue }
                sendEvents(events, to: id, on: stream, headerRevision: result.revision)
            }
            for stream in watchStreams.values where stream.progressRequested { sendRequestedProgress(stream) }
            let progress = !result.deliveries.isEmpty || !result.compacted.isEmpty
            if watchHub.hasUnsynced && progress { watchCatchUpTask.trigger() }
        } catch {
            logger.error("watch catch-up failed", metadata: ["error": "\(error)"])
        }
    }

    private func sendEvents(_ events: [WatchEvent], to id: WatchHub.ID, on stream: WatchStream, headerRevision: Int64) {
        guard var w = stream.watches[id] else { return }
        var r = Etcdserverpb_WatchResponse()
        r.header = header(revision: headerRevision)
        r.watchID = w.clientID
        r.events = events.map { e in
            var out = Mvccpb_Event(e)
            if w.prevKV && !e.isCreate, let prev = try? store.previousVersion(of: e.kv.key, before: e.revision) {
                out.prevKv = Wire.keyValue(prev)
            }
            return out
        }
        w.progressDue = false
        stream.watches[id] = w
        if w.fragment { sendFragmented(r, on: stream) } else { send(r, on: stream) }
    }

    /// etcd's fragmenting: responses at or over --max-request-bytes with two
    /// or more events go out in pieces, all but the last marked `fragment`.
    private func sendFragmented(_ r: Etcdserverpb_WatchResponse, on stream: WatchStream) {
        let limit = config.maxRequestBytes
        guard ((try? r.serializedBytes() as [UInt8])?.count ?? 0) >= limit, r.events.count >= 2 else {
            send(r, on: stream)
            return
        }
        var index = 0
        while index < r.events.count {
            var piece = r
            piece.events = []
            piece.fragment = true
            while index < r.events.count {
                piece.events.append(r.events[index])
                if piece.events.count > 1, ((try? piece.serializedBytes() as [UInt8])?.count ?? 0) >= limit {
                    piece.events.removeLast()
                    break
                }
                index += 1
            }
            if index == r.events.count { piece.fragment = false }
            send(piece, on: stream)
        }
    }

    private func send(_ r: Etcdserverpb_WatchResponse, on stream: WatchStream) {
        if let bytes: [UInt8] = try? r.serializedBytes() { stream.call.send(bytes) }
    }

    // MARK: Progress

    /// Answers a progress request once every watcher of the stream is
    /// synced: one response with watch_id -1 at the current revision, which
    /// promises that no event at or below it is still to come (etcd #15220).
    private func sendRequestedProgress(_ stream: WatchStream) {
        guard stream.watches.keys.allSatisfy({ watchHub.isSynced($0) }) else { return }
        stream.progressRequested = false
        var r = Etcdserverpb_WatchResponse()
        r.header = header()
        r.watchID = -1
        send(r, on: stream)
    }

    /// The periodic notification of watchers that asked for it, skipped for
    /// a watcher that got events since the last tick or is not synced.
    func progressTick() {
        for stream in watchStreams.values {
            for (id, var w) in stream.watches where w.progressNotify {
                if w.progressDue && watchHub.isSynced(id) && !stream.isBackedUp {
                    var r = Etcdserverpb_WatchResponse()
                    r.header = header()
                    r.watchID = w.clientID
                    send(r, on: stream)
                }
                w.progressDue = true
                stream.watches[id] = w
            }
        }
    }
}

extension Mvccpb_Event {
    init(_ e: WatchEvent) {
        self.init()
        type = e.kind == .put ? .put : .delete
        kv = Wire.keyValue(e.kv)
    }
}
