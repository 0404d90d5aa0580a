import EtcdProto
import Foundation
import MVCC
import Transport

/// A watcher as the server serves it: which stream it is on and what it
/// asked for. One map of these for all streams keeps the per-watcher cost
/// to one entry here, one in the stream's `byClientID`, and the hub's.
struct ServedWatch {
    /// Unowned and unchecked: `watchStreams` owns the stream, and a stream
    /// ends only after its watchers are removed here (`closeWatchStream`).
    /// A checked reference cost an atomic count on every copy and read of
    /// the entry, several per delivered event.
    unowned(unsafe) let stream: WatchStream
    var clientID: Int64
    var prevKV: Bool
    var fragment: Bool
    var progressNotify: Bool
    /// etcd's ticker flag: a progress notification is due at the next
    /// tick unless events were sent since the last one.
    var progressDue = true
}

/// One Watch call: a bidirectional stream carrying any number of watchers.
final class WatchStream {
    let call: GRPCCall
    /// This stream's watchers by the id the client knows them by.
    var byClientID = ClientWatchIDs()
    var nextClientID: Int64 = 0
    /// A progress request waits until every watcher of the stream is synced.
    var progressRequested = false

    /// The client IDs of this stream's recipients of the event being
    /// fanned out, without and with prev_kv: the stream's messages for it
    /// differ only in the ID, and go out together once every recipient is
    /// known (`listed` while the stream is in the fan-out's list;
    /// `backedUp` as its queue was when listed).
    var fanOut = (listed: false, backedUp: false, plain: [UInt64](), withPrev: [UInt64]())

    init(call: GRPCCall) { self.call = call }

    /// Stop sending to this stream past this many queued bytes: its
    /// watchers fall back to history until it drains.
    static let highWaterBytes = 1 << 20
    var isBackedUp: Bool { call.queuedBytes >= Self.highWaterBytes }
}

/// etcdserverpb.Watch over the watch hub.
extension EtcdServer {
    func registerWatch() {
        // Watchers see a change only once the WAL holds it, never one that
        // a crash could still take back.
        store.onChange = { [unowned self] revision, events in
            // With no watcher, nobody needs them: a watcher created later
            // either starts after them or reads them from history.
            if !servedWatches.isEmpty { undispatchedChanges.append((revision, events)) }
            if !keyWaits.isEmpty { keyChanges.append((revision, events)) }
        }
        let key = metrics.key(type: "bidi_stream", service: "etcdserverpb.Watch", method: "Watch")
        register("etcdserverpb.Watch", "Watch", .bidirectionalStreaming) { [unowned self] call, _ in
            let stream = WatchStream(call: call)
            watchStreams[ObjectIdentifier(stream)] = stream
            call.onMessage = { [unowned self, unowned stream] bytes in
                guard let request = try? Etcdserverpb_WatchRequest(serializedBytes: bytes) else {
                    finish(call, key, status: GRPCStatus(.internal, "grpc: error unmarshalling request"))
                    return
                }
                handle(request, on: stream)
            }
            // As etcd: a client that is done sending still gets its events;
            // the stream ends when the client cancels or goes away.
            call.onRequestEnd = nil
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
        // Refused as etcd refuses: a created-and-canceled response whose
        // reason is the gRPC error's text.
        do {
            if let user = try caller(of: stream.call) {
                try authStore.check(user, key: key, rangeEnd: [UInt8](c.rangeEnd), write: false)
            }
        } catch {
            created.watchID = -1
            created.canceled = true
            created.cancelReason = error.goErrorText
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
        let id: WatchHub.ID
        if let free = freeWatcherIDs.popLast() {
            id = free
        } else {
            id = nextWatcherID
            nextWatcherID += 1
        }
        servedWatches[id] = ServedWatch(stream: stream, clientID: clientID, prevKV: c.prevKv, fragment: c.fragment,
                                        progressNotify: c.progressNotify)
        stream.byClientID[clientID] = id
        created.watchID = clientID
        send(created, on: stream)
        watchHub.add(id, range: internRange(KeyRange(key: key, rangeEnd: [UInt8](c.rangeEnd))), startRevision: c.startRevision,
                     noPut: c.filters.contains(.noput), noDelete: c.filters.contains(.nodelete),
                     currentRevision: store.currentRevision)
        if !watchHub.isSynced(id) { watchCatchUpTask.trigger() }
    }

    /// One copy of each distinct range, shared by every watcher of it (many
    /// controllers watch the same prefix): the key bytes are then stored
    /// once, not once per watcher.
    private func internRange(_ range: KeyRange) -> KeyRange {
        if let shared = watchRanges[range] {
            watchRanges[range] = (shared.range, shared.users + 1)
            return shared.range
        }
        watchRanges[range] = (range, 1)
        return range
    }

    private func releaseRange(_ range: KeyRange) {
        guard let shared = watchRanges[range] else { return }
        watchRanges[range] = shared.users > 1 ? (shared.range, shared.users - 1) : nil
    }

    private func removeWatch(_ id: WatchHub.ID, from stream: WatchStream) {
        if let range = watchHub.watchers[id]?.range { releaseRange(range) }
        watchHub.remove(id)
        if let w = servedWatches.removeValue(forKey: id) {
            stream.byClientID[w.clientID] = nil
            freeWatcherIDs.append(id)
        }
    }

    private func closeWatchStream(_ stream: WatchStream) {
        for id in stream.byClientID.hubIDs { removeWatch(id, from: stream) }
        watchStreams[ObjectIdentifier(stream)] = nil
    }

    // MARK: Sending

    /// Hands the changes applied just now to the watchers.
    func dispatchAppliedChanges() {
        let changes = undispatchedChanges
        undispatchedChanges.removeAll()
        for (revision, events) in changes { dispatchWatchEvents(revision, events) }
    }

    private func dispatchWatchEvents(_ revision: Int64, _ events: [WatchEvent]) {
        let encoded = EncodedEvents()
        if events.count == 1 {
            // The common write changes one key: every recipient gets the
            // same bytes but for its watch ID, and nothing is listed per
            // watcher but its ID on its stream. (Spelled out
            // beside `sendEvents`: routing it through that function, which
            // builds the events' field per call, cost 10-25% more server
            // CPU per event in swetcd-bench watch-latency at 10,000
            // watchers.)
            let head = encoded.header(revision, self)
            var tails: (plain: [UInt8]?, withPrev: [UInt8]?) = (nil, nil)
            var backedUp: [WatchHub.ID] = []
            // Recipients are gathered per stream (their watchers need not
            // be adjacent here), then each stream gets its messages in one
            // send.
            var streams: [WatchStream] = []
            watchHub.forEachRecipient(of: events[0]) { id in
                // One read of the entry (a plain copy: its stream reference
                // is not counted).
                guard let w = servedWatches[id] else { return }
                let stream = w.stream
                if !stream.fanOut.listed {
                    stream.fanOut.listed = true
                    stream.fanOut.backedUp = stream.isBackedUp
                    streams.append(stream)
                }
                if stream.fanOut.backedUp { return backedUp.append(id) }
                if w.progressDue { servedWatches[id]!.progressDue = false }
                if w.fragment { return sendEvents(events, to: id, headerRevision: revision, encoded: encoded) }
                if w.prevKV {
                    stream.fanOut.withPrev.append(UInt64(bitPattern: w.clientID))
                } else {
                    stream.fanOut.plain.append(UInt64(bitPattern: w.clientID))
                }
            }
            func send(_ ids: inout [UInt64], on stream: WatchStream, prevKV: Bool, tail: inout [UInt8]?) {
                guard !ids.isEmpty else { return }
                tail = tail ?? encoded.eventFields(events, prevKV: prevKV, store: store)
                metrics.eventsSent += ids.count
                stream.call.send(MessageParts(head: head, field: 2, value: 0, tail: tail!), withEachValue: ids)
                ids.removeAll(keepingCapacity: true)
            }
            for stream in streams {
                stream.fanOut.listed = false
                send(&stream.fanOut.plain, on: stream, prevKV: false, tail: &tails.plain)
                send(&stream.fanOut.withPrev, on: stream, prevKV: true, tail: &tails.withPrev)
            }
            // The consumers are slow: they get these from history later.
            for id in backedUp { watchHub.desync(id, from: revision) }
            if watchHub.hasUnsynced { watchCatchUpTask.trigger() }
            return
        }
        for (id, evs) in watchHub.dispatch(revision: revision, events: events) {
            guard let stream = servedWatches[id]?.stream else { continue }
            if stream.isBackedUp {
                // The consumer is slow: it gets these from history later.
                watchHub.desync(id, from: evs[0].revision)
                continue
            }
            sendEvents(evs, to: id, headerRevision: revision, encoded: encoded)
        }
        if watchHub.hasUnsynced { watchCatchUpTask.trigger() }
    }

    /// One bounded catch-up pass; runs again while there is work it can do.
    func watchCatchUp() {
        do {
            let result = try watchHub.catchUp(store) { id in !(servedWatches[id]?.stream.isBackedUp ?? true) }
            for (id, compactRevision, range) in result.compacted {
                releaseRange(range)
                guard let w = servedWatches[id] else { continue }
                let stream = w.stream
                var r = Etcdserverpb_WatchResponse()
                r.header = header()
                r.watchID = w.clientID
                r.compactRevision = compactRevision
                r.canceled = true
                send(r, on: stream)
                servedWatches[id] = nil
                freeWatcherIDs.append(id)
                stream.byClientID[w.clientID] = nil
            }
            let encoded = EncodedEvents()
            for (i, (id, events)) in result.deliveries.enumerated() {
                guard servedWatches[id] != nil else { continue }
                sendEvents(events, to: id, headerRevision: result.revision, encoded: encoded,
                           sharedAs: result.deliveryGroups[i])
            }
            for stream in watchStreams.values where stream.progressRequested { sendRequestedProgress(stream) }
            let progress = !result.deliveries.isEmpty || !result.compacted.isEmpty
            if watchHub.hasUnsynced && progress { watchCatchUpTask.trigger() }
        } catch {
            logger.error("watch catch-up failed", metadata: ["error": "\(error)"])
        }
    }

    /// Sends a watcher (that is served) its events.
    /// `sharedAs` numbers `events` when other watchers of this pass get
    /// the same array (a catch-up pass's delivery groups): its field is then
    /// built once.
    private func sendEvents(_ events: [WatchEvent], to id: WatchHub.ID, headerRevision: Int64,
                            encoded cache: EncodedEvents, sharedAs group: Int? = nil) {
        metrics.eventsSent += events.count
        if servedWatches[id]!.progressDue { servedWatches[id]!.progressDue = false }
        let w = servedWatches[id]!
        let stream = w.stream
        if w.fragment {
            var r = Etcdserverpb_WatchResponse()
            r.header = header(revision: headerRevision)
            r.watchID = w.clientID
            r.events = events.map { try! Mvccpb_Event(serializedBytes: cache.bytes(of: $0, prevKV: w.prevKV, store: store)) }
            sendFragmented(r, on: stream)
            return
        }
        // The common case by hand: a revision's events are encoded once and
        // shared by every watcher that gets them; only the watch id differs,
        // and the response is put together where it is queued.
        stream.call.send(MessageParts(head: cache.header(headerRevision, self), field: 2,
                                      value: UInt64(bitPattern: w.clientID),
                                      tail: cache.eventFields(events, prevKV: w.prevKV, store: store, sharedAs: group)))
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
        guard stream.byClientID.hubIDs.allSatisfy({ watchHub.isSynced($0) }) else { return }
        stream.progressRequested = false
        var r = Etcdserverpb_WatchResponse()
        r.header = header()
        r.watchID = -1
        send(r, on: stream)
    }

    /// The periodic notification of watchers that asked for it, skipped for
    /// a watcher that got events since the last tick or is not synced.
    func progressTick() {
        for id in servedWatches.ids {
            let w = servedWatches[id]!
            guard w.progressNotify else { continue }
            if w.progressDue && watchHub.isSynced(id) && !w.stream.isBackedUp {
                var r = Etcdserverpb_WatchResponse()
                r.header = header()
                r.watchID = w.clientID
                send(r, on: w.stream)
            }
            servedWatches[id]!.progressDue = true
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

/// The wire bytes of events (and of response headers) made once and shared
/// by every watcher a dispatch or catch-up pass sends them to.
final class EncodedEvents {
    private struct Key: Hashable {
        var key: [UInt8]
        var revision: Int64
        var kind: WatchEvent.Kind
        var prevKV: Bool
    }
    private var events: [Key: [UInt8]] = [:]
    private var headers: [Int64: [UInt8]] = [:]
    private var fieldsOfGroups: [Int: [UInt8]] = [:]
    /// Field 11 (events) of a WatchResponse, for these events; kept for the
    /// next call with the same `sharedAs` number (and `prevKV`) when given.
    func eventFields(_ evs: [WatchEvent], prevKV: Bool, store: Store, sharedAs group: Int? = nil) -> [UInt8] {
        let key = group.map { $0 << 1 | (prevKV ? 1 : 0) }
        if let key, let shared = fieldsOfGroups[key] { return shared }
        var out: [UInt8] = []
        for e in evs { WireBytes.appendBytesField(11, bytes(of: e, prevKV: prevKV, store: store), to: &out) }
        if let key { fieldsOfGroups[key] = out }
        return out
    }

    /// A put and a delete of one key can share a revision (etcd's overlap
    /// rule allows it across sibling nested txns), so the kind is part of
    /// the identity.
    func bytes(of e: WatchEvent, prevKV: Bool, store: Store) -> [UInt8] {
        let wantsPrev = prevKV && !e.isCreate
        let k = Key(key: e.kv.key, revision: e.revision, kind: e.kind, prevKV: wantsPrev)
        if let b = events[k] { return b }
        var out = Mvccpb_Event(e)
        if wantsPrev, let prev = try? store.previousVersion(of: e.kv.key, before: e.revision) {
            out.prevKv = Wire.keyValue(prev)
        }
        let b: [UInt8] = (try? out.serializedBytes()) ?? []
        events[k] = b
        return b
    }

    /// Field 1 (the header) of a WatchResponse, encoded.
    func header(_ revision: Int64, _ server: EtcdServer) -> [UInt8] {
        if let h = headers[revision] { return h }
        var out: [UInt8] = []
        WireBytes.appendBytesField(1, (try? server.header(revision: revision).serializedBytes()) ?? [], to: &out)
        headers[revision] = out
        return out
    }
}

/// Protobuf field encoding by hand, for the few hot messages.
enum WireBytes {
    static func appendVarint(_ v: UInt64, to out: inout [UInt8]) { KeyValue.appendVarint(v, &out) }

    /// Reads a varint at `at`, moving past it; nil if the bytes end first.
    static func readVarint(_ bytes: [UInt8], at: inout Int) -> UInt64? {
        var v: UInt64 = 0, shift: UInt64 = 0
        while at < bytes.count && shift < 64 {
            let b = bytes[at]
            at += 1
            v |= UInt64(b & 0x7f) << shift
            if b & 0x80 == 0 { return v }
            shift += 7
        }
        return nil
    }

    static func appendVarintField(_ field: UInt64, _ v: UInt64, to out: inout [UInt8]) {
        guard v != 0 else { return }  // proto3 omits zero values
        appendVarint(field << 3, to: &out)
        appendVarint(v, to: &out)
    }

    static func appendBytesField(_ field: UInt64, _ bytes: [UInt8], to out: inout [UInt8]) {
        appendVarint(field << 3 | 2, to: &out)
        appendVarint(UInt64(bytes.count), to: &out)
        out.append(contentsOf: bytes)
    }
}
