@testable import Auth
@testable import Bolt
@testable import Member
@testable import MVCC
import Raft
@testable import Server
@testable import Snapshot
@testable import Transport
@testable import V2Store
@testable import WAL
#if canImport(Glibc)
import Glibc
#endif

/// One decoder fed arbitrary bytes. A target crashes (traps) only on a bug:
/// a decoder refuses what it cannot read; where a decoder has an encoder,
/// what it accepts must encode and decode back the same (the oracle).
typealias Target = @Sendable (UnsafeRawBufferPointer) -> Void

let targets: [String: Target] = [
    // HTTP/1.1 requests off a byte stream (pipelined ones in turn), and
    // the v2 keys API's path, query and form parsing of each.
    "http1": { input in
        var rest = input
        while case .request(let request, let consumed) = HTTP1Parser.parse(rest, limits: TransportLimits()) {
            precondition(consumed > 0 && consumed <= rest.count, "consumed \(consumed) of \(rest.count)")
            if request.target.hasPrefix("/v2/keys") { _ = try? V2KeyRequest(request) }
            rest = UnsafeRawBufferPointer(rebasing: rest[consumed...])
        }
    },
    // gRPC's length-prefixed messages off a stream.
    "grpc-frame": { input in
        var queue = ByteQueue()
        queue.append(Array(input))
        while case .message(let m) = GRPCFrame.next(from: &queue, maxMessageBytes: 1 << 16) {
            precondition(m.count <= 1 << 16)
        }
    },
    // The write path's hand-written PutRequest decoder.
    "put-request": { input in _ = PutRequest(encoded: input) },
    // The backend's KeyValue encoding; what decodes re-encodes the same.
    "key-value": { input in
        guard let kv = KeyValue(encoded: input) else { return }
        _ = KeyValue(encoded: input, skipValue: true)
        precondition(KeyValue(encoded: kv.encoded()) == kv, "KeyValue does not round-trip")
    },
    // Raft messages as peers send them (etcd's raftpb.Message).
    "raft-message": { input in _ = try? RaftWire.decode(Array(input)) },
    // Raft's WAL records: entries, hard states, snapshot markers.
    "raft-records": { input in
        let bytes = Array(input)
        _ = RaftRecords.decodeEntry(bytes)
        _ = RaftRecords.decodeHardState(bytes)
        _ = RaftRecords.decodeSnapshotMarker(bytes)
    },
    // A log entry's request, as apply decodes it (every kind).
    "log-entry": { input in
        let bytes = Array(input)
        if let p = ProposedRequest(decoding: bytes) { _ = try? DecodedWrite(p.kind, p.request) }
        if let e = LegacyLogEntry(decoding: bytes) { _ = try? DecodedWrite(e.kind, e.request) }
    },
    // A WAL segment whose records carry valid checksums (blind bytes never
    // would), then possibly damaged or cut, read back by recovery.
    "wal": { input in fuzzWAL(input) },
    // bbolt files (etcd's backend, snapshots): every bucket walked, as
    // given and with both metas' checksums made valid (mutations would
    // otherwise rarely get past them).
    "bolt": { input in
        var bytes = Array(input)
        readBolt(bytes)
        if fixBoltMetaChecksums(&bytes) { readBolt(bytes) }
    },
    // The membership kept in the backend, and membership log entries.
    "membership": { input in
        _ = try? Membership(encoded: Array(input))
        _ = MembershipEntry(encoded: Array(input))
    },
    // The auth store kept in the backend; what decodes re-encodes the same.
    "auth-store": { input in
        guard let store = AuthStore(encoded: Array(input)) else { return }
        precondition(AuthStore(encoded: store.encoded) != nil, "AuthStore does not round-trip")
    },
    // A lease kept in the backend.
    "lease": { input in _ = StoredLease(id: 1, encoded: Array(input)) },
    // The JSON gateway's request bodies: Go's base64 checks, the line-break
    // fix-up, a streamed body's objects and protobuf JSON for a few
    // routes; what decodes is protobuf its message reads back.
    "gateway": { input in fuzzGateway(Array(input)) },
    // v2 writes as the log carries them, v2 nodes as the backend keeps
    // them and v2 answers; each re-encodes the same.
    "v2-request": { input in
        let bytes = Array(input)
        if let r = V2Request(encoded: bytes) { precondition(V2Request(encoded: r.encoded()) == r, "V2Request does not round-trip") }
        if let n = V2Store.Node(encoded: bytes) { precondition(V2Store.Node(encoded: n.encoded()) == n, "Node does not round-trip") }
        if let a = V2Answer(encoded: bytes) { precondition(V2Answer(encoded: a.encoded()) == a, "V2Answer does not round-trip") }
    },
    // etcd's WAL as migration reads it, its records behind a valid CRC chain.
    "etcd-wal": { input in fuzzEtcdWAL(input) },
    // Snapshot files: as given, and made to carry a valid SHA-256 (of a
    // bbolt file with valid metas, when it is one), then read for status.
    "snapshot": { input in fuzzSnapshot(Array(input)) },
]

/// The WAL target's input: a mode byte, then records as (type, length,
/// data) triples; the mode may flip one byte of the segment written or cut
/// it short, as a crash or a bad disk would.
func fuzzWAL(_ input: UnsafeRawBufferPointer) {
    guard let mode = input.first else { return }
    var at = 1
    var segment: [UInt8] = []
    var chain: UInt32 = 0
    let types: [WALRecordType] = [.entry, .hardState, .snapshot, .raftEntry, .crcSeed]
    while at + 2 <= input.count {
        let type = types[Int(input[at]) % types.count]
        let length = min(Int(input[at + 1]), input.count - at - 2)
        let data = Array(input[(at + 2)..<(at + 2 + length)])
        at += 2 + length
        chain = WALRecord(type: type, data: data).encode(into: &segment, previousCRC: chain)
    }
    if mode & 1 != 0, !segment.isEmpty {
        segment[Int(mode >> 1) * 7919 % segment.count] ^= 0x5A
    }
    if mode & 0x80 != 0, !segment.isEmpty {
        segment.removeLast(Int(mode) % segment.count)
    }
    segment += [UInt8](repeating: 0, count: 64)
    let dir = "/dev/shm/swetcd-fuzz-wal-\(getpid())"
    mkdir(dir, 0o700)
    let path = dir + "/" + WAL.segmentName(0)
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    precondition(fd >= 0, "cannot write \(path)")
    _ = segment.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    close(fd)
    if let wal = try? WAL(directory: dir), let records = try? wal.recover() {
        for r in records {
            _ = RaftRecords.decodeEntry(r.data)
            _ = RaftRecords.decodeHardState(r.data)
        }
        wal.close()
    }
    // Recovery may have cut a torn tail or added nothing else; start clean.
    if let d = opendir(dir) {
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { unlink(dir + "/" + name) }
        }
        closedir(d)
    }
}

func readBolt(_ bytes: [UInt8]) {
    guard let reader = try? BoltReader(bytes: bytes), let names = try? reader.bucketNames() else { return }
    for name in names.prefix(16) {
        var seen = 0
        try? reader.forEach(inBucket: [name]) { _, _ in
            seen += 1
            if seen > 100_000 { throw BoltError("enough") }
        }
    }
}

/// Rewrites the checksums of the two meta pages (pages 0 and 1, the page
/// size read from the first); false when the input is too short for both.
func fixBoltMetaChecksums(_ b: inout [UInt8]) -> Bool {
    let m = BoltFormat.pageHeaderSize
    guard b.count >= m + BoltFormat.metaSize else { return false }
    let pageSize = Int(b.loadLE(UInt32.self, at: m + 8))
    guard pageSize >= m + BoltFormat.metaSize, pageSize <= 1 << 16, b.count >= pageSize + m + BoltFormat.metaSize else { return false }
    for page in [0, pageSize] {
        let at = page + m
        b.storeLE(BoltFormat.fnv1a64(b[at..<(at + BoltFormat.metaChecksumOffset)]), at: at + BoltFormat.metaChecksumOffset)
    }
    return true
}
