import Checksum
import Logging
import Member
import MVCC
import Raft
import Transport
#if canImport(Glibc)
import Glibc
#endif

/// A follower that needs entries the leader's log no longer holds gets the
/// leader's backend instead (Raft's snapshot): a consistent copy taken off
/// the loop (LMDB's compacting copy, as the Snapshot RPC's), streamed over
/// the peer port on a connection of its own, checksummed, made durable in
/// the follower's `member/snap`, and only then stepped into its Raft as the
/// snapshot message; when Raft asks, the follower swaps it in as its
/// backend and rebuilds every index from it.
///
/// On the wire (`/swetcd.Raft/Snapshot`, a client stream): the first
/// message is the database's size (u64 LE) and CRC-32C (u32 LE), then the
/// `raftpb.Message` (MsgSnap with the snapshot's index and term); the
/// database follows in messages of at most `snapshotChunkBytes`.
extension EtcdServer {
    static let snapshotPath = "/swetcd.Raft/Snapshot"
    static let snapshotChunkBytes = 256 << 10

    /// Where a received snapshot for log index `index` waits to be installed.
    func receivedSnapshotPath(_ index: UInt64) -> String {
        let hex = String(index, radix: 16)
        return config.dataDir + "/member/snap/" + String(repeating: "0", count: max(0, 16 - hex.count)) + hex + ".snap.db"
    }

    // MARK: Sending (the leader)

    /// Raft wants `m` (MsgSnap) sent: one transfer per follower at a time
    /// (Raft asks again on every heartbeat answer while one runs).
    func sendSnapshot(_ m: Message) {
        guard member.transport != nil, !snapshotTransfers.contains(m.to) else { return }
        do {
            try store.commit()  // the copy holds everything applied
        } catch {
            logger.warning("cannot send a snapshot", metadata: ["error": "\(error)"])
            return
        }
        snapshotTransfers.insert(m.to)
        snapshotsInProgress += 1
        let path = config.dataDir + "/member/snap/send-\(String(m.to, radix: 16)).tmp"
        let copier = backend.copier
        let me = LoopBound(self), loop = self.loop
        logger.info("sending database snapshot", metadata: ["remote-peer-id": "\(hex(m.to))", "snapshot-index": "\(m.snapshot?.index ?? 0)"])
        runOnNewThread {
            unlink(path)
            let copied = Result { () throws -> (size: UInt64, crc: UInt32) in
                try copier.copy(to: path)
                return try Self.sizeAndChecksum(of: path)
            }.mapError { "\($0)" }
            loop.execute {
                let server = me.value
                server.snapshotsInProgress -= 1
                switch copied {
                case .success(let file):
                    server.upload(m, path: path, size: file.size, crc: file.crc)
                case .failure(let why):
                    unlink(path)
                    server.snapshotTransfers.remove(m.to)
                    server.logger.warning("cannot copy the backend for a snapshot", metadata: ["error": "\(why)"])
                }
            }
        }
    }

    private func upload(_ m: Message, path: String, size: UInt64, crc: UInt32) {
        guard let transport = member.transport, let message = try? RaftWire.encode(m) else {
            unlink(path)
            snapshotTransfers.remove(m.to)
            return
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            snapshotTransfers.remove(m.to)
            return
        }
        var first: [UInt8] = []
        for shift in stride(from: 0, to: 64, by: 8) { first.append(UInt8(truncatingIfNeeded: size >> UInt64(shift))) }
        for shift in stride(from: 0, to: 32, by: 8) { first.append(UInt8(truncatingIfNeeded: crc >> UInt32(shift))) }
        first += message
        let started = monotonicNanoseconds()
        transport.upload(Self.snapshotPath, to: m.to, first: first, next: {
            // Page-cache reads of a file just written: short.
            var chunk = [UInt8](repeating: 0, count: Self.snapshotChunkBytes)
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { return nil }
            chunk.removeLast(chunk.count - n)
            return chunk
        }, completion: { [unowned self] result in
            close(fd)
            unlink(path)
            snapshotTransfers.remove(m.to)
            switch result {
            case .success:
                logger.info("sent database snapshot", metadata: [
                    "remote-peer-id": "\(hex(m.to))", "snapshot-index": "\(m.snapshot?.index ?? 0)", "bytes": "\(size)",
                    "took": Self.took(since: started),
                ])
            case .failure(let status):
                logger.warning("failed to send database snapshot", metadata: ["remote-peer-id": "\(hex(m.to))", "error": "\(status.message)"])
            }
        })
    }

    private static func sizeAndChecksum(of path: String) throws -> (size: UInt64, crc: UInt32) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ServerError.dataDir(path, String(cString: strerror(errno))) }
        defer { close(fd) }
        var crc = CRC32C(), size: UInt64 = 0
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 { throw ServerError.dataDir(path, String(cString: strerror(errno))) }
            if n == 0 { break }
            buffer.withUnsafeBytes { crc.update(UnsafeRawBufferPointer(rebasing: $0[..<n])) }
            size += UInt64(n)
        }
        return (size, crc.value)
    }

    // MARK: Receiving (a follower)

    /// The peer method that receives a leader's snapshot.
    func snapshotReceiver() -> GRPCMethod {
        GRPCMethod(.bidirectionalStreaming) { [unowned self] call, first in
            if let theirs = call.metadata("x-etcd-cluster-id"), theirs != String(clusterID, radix: 16) {
                return call.finish(GRPCStatus(.failedPrecondition, PeerTransport.clusterIDMismatch))
            }
            if first.isEmpty {
                call.onMessage = { [unowned self] header in receiveSnapshot(call, header: header) }
            } else {
                receiveSnapshot(call, header: first)
            }
        }
    }

    /// The transfer's first message arrived: the database follows.
    private func receiveSnapshot(_ call: GRPCCall, header: [UInt8]) {
        guard header.count > 12, let m = try? RaftWire.decode(Array(header[12...])), m.type == .snapshot,
              let snapshot = m.snapshot, m.to == memberID else {
            return call.finish(GRPCStatus(.invalidArgument, "not a snapshot message"))
        }
        guard !receivingSnapshot else {
            return call.finish(GRPCStatus(.unavailable, "a snapshot is being received already"))
        }
        var size: UInt64 = 0, crc: UInt32 = 0
        for i in 0..<8 { size |= UInt64(header[i]) << UInt64(8 * i) }
        for i in 0..<4 { crc |= UInt32(header[8 + i]) << UInt32(8 * i) }
        let temporary = config.dataDir + "/member/snap/receiving.tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            return call.finish(GRPCStatus(.internal, "cannot write \(temporary): \(String(cString: strerror(errno)))"))
        }
        receivingSnapshot = true
        logger.info("receiving database snapshot", metadata: [
            "snapshot-index": "\(snapshot.index)", "remote-snapshot-sender-id": "\(hex(m.from))", "snapshot-size": "\(size)"])
        var received: UInt64 = 0, sum = CRC32C(), done = false
        let end: (GRPCStatus?) -> Void = { [unowned self] failure in
            guard !done else { return }
            done = true
            receivingSnapshot = false
            close(fd)
            if let failure {
                unlink(temporary)
                logger.warning("failed to receive database snapshot", metadata: ["error": "\(failure.message)"])
                call.finish(failure)
            }
        }
        call.onClose = { end(GRPCStatus(.unavailable, "the leader went away")) }
        call.onMessage = { [unowned self] chunk in
            guard !done else { return }
            received += UInt64(chunk.count)
            let wrote = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard wrote == chunk.count, received <= size else {
                return end(GRPCStatus(.internal, wrote == chunk.count ? "more than the announced size" : "cannot write: \(String(cString: strerror(errno)))"))
            }
            sum.update(chunk)
            guard received == size else { return }
            guard sum.value == crc else { return end(GRPCStatus(.dataLoss, "the snapshot's checksum does not match")) }
            guard fsync(fd) == 0 else { return end(GRPCStatus(.internal, "cannot sync: \(String(cString: strerror(errno)))")) }
            let path = receivedSnapshotPath(snapshot.index)
            guard rename(temporary, path) == 0 else { return end(GRPCStatus(.internal, "cannot rename: \(String(cString: strerror(errno)))")) }
            syncDirectory(config.dataDir + "/member/snap")
            end(nil)
            logger.info("received and saved database snapshot", metadata: [
                "snapshot-index": "\(snapshot.index)", "remote-snapshot-sender-id": "\(hex(m.from))", "snapshot-size": "\(size)"])
            // Durable now: Raft may act on it (it answers the leader once
            // the snapshot is installed and its marker written).
            member.step(m)
            call.finish(.ok)
        }
        if size == 0 { call.onMessage?([]) }
    }

    /// Raft asks for the received snapshot to become the backend: once no
    /// other thread uses the backend, the file is swapped in and every
    /// index (keys, leases, auth, alarms, v2, members) rebuilt from it;
    /// watchers resume from history after the last revision they saw.
    func installSnapshot(_ snapshot: Snapshot, _ done: @escaping (String?) -> Void) {
        guard snapshotsInProgress == 0, !checkpointInProgress, !backend.isDefragmenting else {
            // A copy, a sync or a defragment uses the backend: soon done.
            installRetry = loop.schedule(every: 0.01, repeats: false) { [unowned self] in installSnapshot(snapshot, done) }
            return
        }
        let path = receivedSnapshotPath(snapshot.index)
        guard access(path, F_OK) == 0 else { return done("no snapshot received for index \(snapshot.index)") }
        dispatchAppliedChanges()
        let lastRevision = store.currentRevision
        do {
            try backend.replace(with: path)
            // The leader's identity is in its copy: this member keeps its own.
            try backend.setMetaInt64(.memberID, Int64(bitPattern: memberID))
            try backend.setMetaInt64(.clusterID, Int64(bitPattern: clusterID))
            try store.reload()
            try store.commit()
            try backend.syncer.sync()
            appliedIndex = try store.consistentIndex
            try loadBackendState()
            adoptMembership()
        } catch {
            return done("\(error)")
        }
        let retired = backend.retiredFile
        runOnNewThread { unlink(retired) }
        for id in servedWatches.ids { watchHub.desync(id, from: lastRevision + 1) }
        watchCatchUpTask.trigger()
        recheckKeyWaiters()
        if store.hasPendingCompaction { startCompaction() }
        logger.info("installed a snapshot", metadata: [
            "index": "\(snapshot.index)", "applied-index": "\(appliedIndex)", "revision": "\(store.currentRevision)",
        ])
        done(nil)
    }
}

/// fsyncs a directory, so a rename in it is durable.
func syncDirectory(_ path: String) {
    let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    guard fd >= 0 else { return }
    fsync(fd)
    close(fd)
}
